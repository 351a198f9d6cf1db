//! xenstore access behind a small trait, so the toolstack logic runs against an
//! in-memory fake in tests and against the `xenstore` crate's client for real.

/// Access rights of one permission entry (Xen's `r`, `w`, `b`, `n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
    Both,
}

/// One permission entry: the first entry of a node's list names its owner and what
/// every domain not listed may do; later entries grant one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub domid: u16,
    pub access: Access,
}

/// A xenstore error with Xen's error name (`ENOENT`, `EACCES`, ...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("xenstore {op} {path}: {name}")]
pub struct StoreError {
    pub op: &'static str,
    pub path: String,
    pub name: String,
}

impl StoreError {
    pub fn is_enoent(&self) -> bool {
        self.name == "ENOENT"
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The xenstore operations the toolstack uses (outside transactions).
pub trait Store {
    /// The value of `path`, or `None` when it does not exist.
    fn read(&mut self, path: &str) -> StoreResult<Option<Vec<u8>>>;
    fn write(&mut self, path: &str, value: &[u8]) -> StoreResult<()>;
    fn mkdir(&mut self, path: &str) -> StoreResult<()>;
    /// Removes `path` and everything below it (absent is fine).
    fn rm(&mut self, path: &str) -> StoreResult<()>;
    /// Children of `path`; empty when it does not exist.
    fn directory(&mut self, path: &str) -> StoreResult<Vec<String>>;
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> StoreResult<()>;
    fn introduce(&mut self, domid: u16, gfn: u64, port: u32) -> StoreResult<()>;
    fn release(&mut self, domid: u16) -> StoreResult<()>;
    fn watch(&mut self, path: &str, token: &str) -> StoreResult<()>;
    /// Blocks until a watch fires: (path, token).
    fn read_watch(&mut self) -> StoreResult<(String, String)>;
    /// Starts a transaction: the operations above (but introduce, release and watches)
    /// happen in it until `transaction_end`. Not nested.
    fn transaction_start(&mut self) -> StoreResult<()>;
    /// Commits (`commit`) or abandons the transaction; `Ok(false)` when xenstored
    /// answered EAGAIN (a conflicting change: nothing was applied, start again).
    fn transaction_end(&mut self, commit: bool) -> StoreResult<bool>;

    /// `read` as UTF-8 text (lossy).
    fn read_str(&mut self, path: &str) -> StoreResult<Option<String>> {
        Ok(self
            .read(path)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

#[cfg(test)]
use std::collections::BTreeMap;

/// Nodes by path: value and permissions.
#[cfg(test)]
pub type Nodes = BTreeMap<String, (Vec<u8>, Vec<Perm>)>;

/// An in-memory xenstore for tests: nodes with values and permissions.
#[cfg(test)]
#[derive(Default, Debug)]
pub struct MemStore {
    pub nodes: BTreeMap<String, (Vec<u8>, Vec<Perm>)>,
    pub introduced: BTreeMap<u16, (u64, u32)>,
    pub watches: Vec<(String, String)>,
    pub pending_watch_events: std::collections::VecDeque<(String, String)>,
    /// Fail any write whose path contains this (for error-path tests).
    pub fail_write_containing: Option<String>,
    /// The nodes when the open transaction started.
    pub tx_snapshot: Option<Nodes>,
    /// Answer EAGAIN to this many commits.
    pub commit_conflicts: u32,
    pub commits: u32,
    /// Play dom0's kernel backends: a backend `state` read as 1 with `online` 1 becomes
    /// 2 (probe), and one read as 5 with `online` 0 becomes 6 (closed) — except for
    /// backends whose path contains one of `stuck`.
    pub sim_backends: bool,
    pub stuck: Vec<String>,
}

#[cfg(test)]
impl MemStore {
    fn parent_perms(&self, path: &str) -> Vec<Perm> {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if let Some((_, perms)) = self.nodes.get(parent) {
                return perms.clone();
            }
            p = parent;
        }
        vec![Perm {
            domid: 0,
            access: Access::None,
        }]
    }

    fn ensure(&mut self, path: &str) {
        let mut acc = String::new();
        for part in path.split('/').filter(|s| !s.is_empty()) {
            acc.push('/');
            acc.push_str(part);
            if !self.nodes.contains_key(&acc) {
                let perms = self.parent_perms(&acc);
                self.nodes.insert(acc.clone(), (Vec::new(), perms));
            }
        }
    }

    pub fn value(&self, path: &str) -> Option<String> {
        self.nodes
            .get(path)
            .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn perms(&self, path: &str) -> Option<&[Perm]> {
        self.nodes.get(path).map(|(_, p)| p.as_slice())
    }

    fn simulate(&mut self, path: &str) {
        if !self.sim_backends
            || !path.starts_with("/local/domain/0/backend/")
            || self.tx_snapshot.is_some()
            || self.stuck.iter().any(|s| path.contains(s.as_str()))
        {
            return;
        }
        let Some(dir) = path.strip_suffix("/state") else {
            return;
        };
        let online = self.value(&format!("{dir}/online"));
        let next = match (self.value(path).as_deref(), online.as_deref()) {
            (Some("1"), Some("1")) => "2",
            (Some("5"), Some("0")) => "6",
            _ => return,
        };
        if let Some(n) = self.nodes.get_mut(path) {
            n.0 = next.as_bytes().to_vec();
        }
    }
}

#[cfg(test)]
impl Store for MemStore {
    fn read(&mut self, path: &str) -> StoreResult<Option<Vec<u8>>> {
        self.simulate(path);
        Ok(self.nodes.get(path).map(|(v, _)| v.clone()))
    }
    fn write(&mut self, path: &str, value: &[u8]) -> StoreResult<()> {
        if let Some(f) = &self.fail_write_containing {
            if path.contains(f.as_str()) {
                return Err(StoreError {
                    op: "write",
                    path: path.into(),
                    name: "EIO".into(),
                });
            }
        }
        self.ensure(path);
        self.nodes.get_mut(path).expect("ensured").0 = value.to_vec();
        Ok(())
    }
    fn mkdir(&mut self, path: &str) -> StoreResult<()> {
        self.ensure(path);
        Ok(())
    }
    fn rm(&mut self, path: &str) -> StoreResult<()> {
        let prefix = format!("{path}/");
        self.nodes
            .retain(|k, _| k != path && !k.starts_with(&prefix));
        Ok(())
    }
    fn directory(&mut self, path: &str) -> StoreResult<Vec<String>> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        Ok(self
            .nodes
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> StoreResult<()> {
        match self.nodes.get_mut(path) {
            Some(n) => {
                n.1 = perms.to_vec();
                Ok(())
            }
            None => Err(StoreError {
                op: "set_perms",
                path: path.into(),
                name: "ENOENT".into(),
            }),
        }
    }
    fn introduce(&mut self, domid: u16, gfn: u64, port: u32) -> StoreResult<()> {
        self.introduced.insert(domid, (gfn, port));
        Ok(())
    }
    fn release(&mut self, domid: u16) -> StoreResult<()> {
        self.introduced.remove(&domid);
        Ok(())
    }
    fn watch(&mut self, path: &str, token: &str) -> StoreResult<()> {
        self.watches.push((path.into(), token.into()));
        Ok(())
    }
    fn read_watch(&mut self) -> StoreResult<(String, String)> {
        self.pending_watch_events.pop_front().ok_or(StoreError {
            op: "read_watch",
            path: String::new(),
            name: "EIO".into(),
        })
    }
    fn transaction_start(&mut self) -> StoreResult<()> {
        assert!(self.tx_snapshot.is_none(), "nested transaction");
        self.tx_snapshot = Some(self.nodes.clone());
        Ok(())
    }
    fn transaction_end(&mut self, commit: bool) -> StoreResult<bool> {
        let snap = self.tx_snapshot.take().expect("in a transaction");
        if !commit {
            self.nodes = snap;
            return Ok(true);
        }
        if self.commit_conflicts > 0 {
            self.commit_conflicts -= 1;
            self.nodes = snap;
            return Ok(false);
        }
        self.commits += 1;
        Ok(true)
    }
}
