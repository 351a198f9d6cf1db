//! The xenstore calls xenconsoled makes, behind a small trait.

use anyhow::{Context, Result};

pub trait Store: Send {
    /// The value, or `None` when the node does not exist.
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>>;
    /// Children; empty when the node does not exist.
    fn directory(&mut self, path: &str) -> Result<Vec<String>>;
    fn watch(&mut self, path: &str, token: &str) -> Result<()>;
    fn read_watch(&mut self) -> Result<(String, String)>;
}

pub fn open() -> Result<Box<dyn Store>> {
    Ok(Box::new(Real(xenstore::Client::connect()?)))
}

struct Real(xenstore::Client);

fn enoent(e: &xenstore::Error) -> bool {
    e.name() == Some("ENOENT")
}

impl Store for Real {
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.0.read(0, path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if enoent(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {path}")),
        }
    }
    fn directory(&mut self, path: &str) -> Result<Vec<String>> {
        match self.0.directory(0, path) {
            Ok(v) => Ok(v),
            Err(e) if enoent(&e) => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("listing {path}")),
        }
    }
    fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        self.0
            .watch(path, token)
            .with_context(|| format!("watching {path}"))
    }
    fn read_watch(&mut self) -> Result<(String, String)> {
        Ok(self.0.read_watch()?)
    }
}
