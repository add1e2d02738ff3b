//! PostgreSQL schema introspection from the catalogs: columns with their declared types,
//! unique keys, foreign keys and indexes of one table.

use super::*;

impl PgStore {
    /// A table's columns, keys, foreign keys and indexes; `None` when there is no such table.
    pub(super) async fn describe(&mut self, table: &str) -> Result<Option<TableInfo>, StoreError> {
        let rows = self.query(
                "SELECT column_name::text, data_type::text, is_nullable = 'YES', \
                        column_default IS NOT NULL OR is_identity = 'YES' OR is_generated <> 'NEVER' \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                &[&table],
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let columns = rows
            .iter()
            .map(|r| {
                let declared: String = r.get(1);
                Column {
                    name: r.get(0),
                    family: family(&declared),
                    nullable: r.get(2),
                    has_default: r.get(3),
                    form: if declared == "timestamp without time zone" {
                        Form::UtcNaive
                    } else {
                        Form::Plain
                    },
                    declared,
                }
            })
            .collect();
        let keys = self
            .query(
                "SELECT c.relname::text, i.indisunique AND i.indpred IS NULL, \
                        array_agg(a.attname::text ORDER BY k.ord) \
                 FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = to_regclass(quote_ident($1)) \
                 GROUP BY c.relname, i.indisunique, i.indpred IS NULL ORDER BY c.relname",
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
        Ok(Some(TableInfo {
            columns,
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
