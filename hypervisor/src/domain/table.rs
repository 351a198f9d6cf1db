//! The domain table: domid → shared domain.
//!
//! Look-ups hand out a counted reference (`Arc`), so a domain found here stays valid for
//! as long as the caller holds it, even if it is destroyed meanwhile: destruction only
//! removes it from the table, and its memory goes back when the last reference drops.
//! A removed (dying) domain can no longer be found.

use super::{DomId, Domain};
use crate::hvm::Backend;
use crate::sync::{Level, Lock};
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Every live domain.
pub struct DomainTable<B: Backend> {
    map: Lock<BTreeMap<DomId, Arc<Domain<B>>>>,
}

impl<B: Backend> DomainTable<B> {
    pub const fn new() -> Self {
        DomainTable {
            map: Lock::new(Level::DomainTable, BTreeMap::new()),
        }
    }

    /// The domain `id`, if it exists and is not dying.
    pub fn get(&self, id: DomId) -> Option<Arc<Domain<B>>> {
        self.map.lock().get(&id).cloned()
    }

    /// Adds a built domain; false if the id is taken.
    pub fn insert(&self, dom: Arc<Domain<B>>) -> bool {
        let mut map = self.map.lock();
        if map.contains_key(&dom.id) {
            return false;
        }
        map.insert(dom.id, dom);
        true
    }

    /// Removes `id`; the caller's reference may be the last.
    pub fn remove(&self, id: DomId) -> Option<Arc<Domain<B>>> {
        self.map.lock().remove(&id)
    }

    /// A snapshot of every domain.
    pub fn all(&self) -> Vec<Arc<Domain<B>>> {
        self.map.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The control domain, if one runs.
    pub fn control(&self) -> Option<Arc<Domain<B>>> {
        self.map.lock().values().find(|d| d.is_control()).cloned()
    }
}
