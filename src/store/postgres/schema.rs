//! PostgreSQL schema introspection from the catalogs: columns with their declared types,
//! unique keys, foreign keys and indexes of one table, or of every user table at once.

use super::*;

impl PgStore {
    /// A table's columns, keys, foreign keys and indexes; `None` when there is no such table.
    pub(super) async fn describe(&mut self, table: &str) -> Result<Option<TableInfo>, StoreError> {
        // The catalog, not information_schema: `format_type` keeps the type's modifiers
        // (`character varying(80)`, `numeric(12,2)`, `timestamp(3) ...`), which drift
        // detection compares, as `describe_all` reads them.
        let rows = self
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, \
                        a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' \
                 FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attnum > 0 \
                   AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&table],
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let columns = rows.iter().map(|r| column(r, 0)).collect();
        let keys = self
            .query(
                "SELECT c.relname::text, i.indisunique AND i.indpred IS NULL, \
                        array_agg(a.attname::text ORDER BY k.ord), i.indisprimary \
                 FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = to_regclass(quote_ident($1)) \
                 GROUP BY c.relname, i.indisunique, i.indpred IS NULL, i.indisprimary \
                 ORDER BY c.relname",
                &[&table],
            )
            .await?;
        let indexes: Vec<Index> = keys
            .iter()
            .map(|r| Index {
                name: r.get(0),
                unique: r.get(1),
                columns: r.get(2),
            })
            .collect();
        let refs = self
            .query(
                "SELECT (SELECT array_agg(a.attname::text ORDER BY k.ord) \
                           FROM unnest(c.conkey) WITH ORDINALITY AS k(n, ord) \
                           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n), \
                        p.relname::text, \
                        (SELECT array_agg(a.attname::text ORDER BY k.ord) \
                           FROM unnest(c.confkey) WITH ORDINALITY AS k(n, ord) \
                           JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n) \
                 FROM pg_constraint c JOIN pg_class p ON p.oid = c.confrelid \
                 WHERE c.conrelid = to_regclass(quote_ident($1)) AND c.contype = 'f' \
                 ORDER BY c.conname",
                &[&table],
            )
            .await?;
        let foreign_keys = refs
            .iter()
            .map(|r| ForeignKey {
                columns: r.get(0),
                table: r.get(1),
                references: r.get(2),
            })
            .collect();
        let primary_key = keys
            .iter()
            .find(|r| r.get::<_, bool>(3))
            .map(|r| r.get(2))
            .unwrap_or_default();
        let checks = self
            .query(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE conrelid = to_regclass(quote_ident($1)) AND contype = 'c' ORDER BY conname",
                &[&table],
            )
            .await?
            .iter()
            .map(|r| check_body(&r.get::<_, String>(0)))
            .collect();
        Ok(Some(TableInfo {
            columns,
            primary_key,
            checks,
            unique_keys: indexes
                .iter()
                .filter(|i| i.unique)
                .map(|i| i.columns.clone())
                .collect(),
            foreign_keys,
            indexes,
        }))
    }
}

/// A column from a catalog row holding name, declared type, nullable and has-default from
/// index `at` on.
fn column(r: &tokio_postgres::Row, at: usize) -> Column {
    let declared: String = r.get(at + 1);
    Column {
        name: r.get(at),
        family: family(&declared),
        nullable: r.get(at + 2),
        has_default: r.get(at + 3),
        // `timestamp without time zone`, with or without a precision.
        form: if declared.starts_with("timestamp") && declared.ends_with("without time zone") {
            Form::UtcNaive
        } else {
            Form::Plain
        },
        declared,
    }
}

/// The user tables: ordinary and partitioned, not partitions, not the system's or the engine's.
const USER_TABLES: &str = "c.relkind IN ('r', 'p') AND NOT c.relispartition \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     AND c.relname NOT LIKE '\\_strangler\\_%'";

impl PgStore {
    /// Every user table of every non-system schema, named `schema.table`, in four queries
    /// whatever the table count; partitions are folded into their root table.
    pub(super) async fn describe_all(&mut self) -> Result<Catalog, StoreError> {
        let mut tables: std::collections::BTreeMap<String, TableInfo> = Default::default();
        let cols = self
            .query(
                &format!(
                    "SELECT n.nspname || '.' || c.relname, a.attname::text, \
                            format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, \
                            a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                     WHERE {USER_TABLES} ORDER BY 1, a.attnum"
                ),
                &[],
            )
            .await?;
        for r in &cols {
            let info = tables.entry(r.get(0)).or_insert_with(|| TableInfo {
                columns: Vec::new(),
                unique_keys: Vec::new(),
                primary_key: Vec::new(),
                checks: Vec::new(),
                foreign_keys: Vec::new(),
                indexes: Vec::new(),
            });
            info.columns.push(column(r, 1));
        }
        let keys = self
            .query(
                &format!(
                    "SELECT n.nspname || '.' || c.relname, x.relname::text, \
                            i.indisunique AND i.indpred IS NULL, \
                            array_agg(a.attname::text ORDER BY k.ord), i.indisprimary \
                     FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     JOIN pg_class x ON x.oid = i.indexrelid \
                     JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                     WHERE {USER_TABLES} \
                     GROUP BY 1, 2, 3, 5 ORDER BY 1, 2"
                ),
                &[],
            )
            .await?;
        for r in &keys {
            if let Some(info) = tables.get_mut(&r.get::<_, String>(0)) {
                let index = Index {
                    name: r.get(1),
                    unique: r.get(2),
                    columns: r.get(3),
                };
                if index.unique {
                    info.unique_keys.push(index.columns.clone());
                }
                if r.get::<_, bool>(4) {
                    info.primary_key = index.columns.clone();
                }
                info.indexes.push(index);
            }
        }
        let refs = self
            .query(
                &format!(
                    "SELECT n.nspname || '.' || c.relname, \
                            (SELECT array_agg(a.attname::text ORDER BY k.ord) \
                               FROM unnest(f.conkey) WITH ORDINALITY AS k(n, ord) \
                               JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.n), \
                            (SELECT pn.nspname || '.' || p.relname FROM pg_class p \
                               JOIN pg_namespace pn ON pn.oid = p.relnamespace \
                              WHERE p.oid = coalesce(pg_partition_root(f.confrelid), f.confrelid)), \
                            (SELECT array_agg(a.attname::text ORDER BY k.ord) \
                               FROM unnest(f.confkey) WITH ORDINALITY AS k(n, ord) \
                               JOIN pg_attribute a ON a.attrelid = f.confrelid AND a.attnum = k.n) \
                     FROM pg_constraint f JOIN pg_class c ON c.oid = f.conrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE f.contype = 'f' AND f.conparentid = 0 AND {USER_TABLES} \
                     ORDER BY 1, f.conname"
                ),
                &[],
            )
            .await?;
        for r in &refs {
            if let Some(info) = tables.get_mut(&r.get::<_, String>(0)) {
                info.foreign_keys.push(ForeignKey {
                    columns: r.get(1),
                    table: r.get(2),
                    references: r.get(3),
                });
            }
        }
        let checks = self
            .query(
                &format!(
                    "SELECT n.nspname || '.' || c.relname, pg_get_constraintdef(f.oid) \
                     FROM pg_constraint f JOIN pg_class c ON c.oid = f.conrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE f.contype = 'c' AND {USER_TABLES} ORDER BY 1, f.conname"
                ),
                &[],
            )
            .await?;
        for r in &checks {
            if let Some(info) = tables.get_mut(&r.get::<_, String>(0)) {
                info.checks.push(check_body(&r.get::<_, String>(1)));
            }
        }
        let parts = self
            .query(
                "SELECT n.nspname || '.' || c.relname, rn.nspname || '.' || r.relname \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_class r ON r.oid = pg_partition_root(c.oid) \
                 JOIN pg_namespace rn ON rn.oid = r.relnamespace \
                 WHERE c.relispartition ORDER BY 1",
                &[],
            )
            .await?;
        Ok(Catalog {
            tables: tables.into_iter().collect(),
            aliases: parts.iter().map(|r| (r.get(0), r.get(1))).collect(),
        })
    }
}

/// The condition of `CHECK ((cond))` as `pg_get_constraintdef` prints it.
fn check_body(def: &str) -> String {
    let t = def.trim();
    let t = t.strip_prefix("CHECK").unwrap_or(t).trim();
    let t = t.strip_suffix("NOT VALID").unwrap_or(t).trim();
    t.to_string()
}
