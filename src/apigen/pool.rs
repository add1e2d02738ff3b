//! Connections of a generated service to its database: up to a bound, each made an
//! application's connection, reused while healthy and dropped after a connection fault.

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::store::{Store, StoreError};

/// A bounded set of application connections to one database.
pub struct Pool {
    url: String,
    idle: Mutex<Vec<Store>>,
    permits: Semaphore,
}

/// A connection taken from the pool; goes back when dropped unless marked broken.
pub struct Lease<'a> {
    store: Option<Store>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
    /// Set after a connection fault: the connection is closed instead of reused.
    pub broken: bool,
}

impl Pool {
    /// A pool of at most `size` connections to `url` (none made yet).
    pub fn new(url: &str, size: usize) -> Pool {
        Pool {
            url: url.to_string(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    /// A connection: an idle one, or a new one when none is idle.
    pub async fn get(&self) -> Result<Lease<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Value("the pool is closed".into()))?;
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let store = match idle {
            Some(s) => s,
            None => {
                let mut s = Store::connect(&self.url).await?;
                s.statements().as_application().await?;
                s
            }
        };
        Ok(Lease {
            store: Some(store),
            pool: self,
            _permit: permit,
            broken: false,
        })
    }
}

impl Lease<'_> {
    /// The connection.
    pub fn store(&mut self) -> &mut Store {
        self.store.as_mut().expect("present until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.store.take()
            && !self.broken
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(s);
        }
    }
}
