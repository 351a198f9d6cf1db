//! The node tree, transactions layered over it, and the view both go through.

use std::collections::HashMap;

use super::path;
use crate::perms::Perm;

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its value.
    pub value: Vec<u8>,
    /// Its permissions (never empty; the first entry is the owner).
    pub perms: Vec<Perm>,
    /// Leaf names of its children, in creation order.
    pub children: Vec<String>,
    /// Generation: changes whenever the node (value, perms or children) changes.
    pub gen: u64,
}

impl Node {
    pub(crate) fn owner(&self) -> u16 {
        self.perms.first().map_or(0, |p| p.domid)
    }
}

/// A change that fires watches.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub path: String,
    /// Permissions deciding who may see the event.
    pub perms: Vec<Perm>,
    /// A removal: watches below `path` fire too (with their own path).
    pub recursive: bool,
}

/// The committed tree.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: HashMap<String, Node>,
    gen: u64,
    /// Nodes owned by each domain (`/` not counted).
    owned: HashMap<u16, usize>,
}

impl Tree {
    pub fn new(root_perms: Vec<Perm>) -> Tree {
        let mut nodes = HashMap::new();
        nodes.insert(
            "/".to_owned(),
            Node {
                value: Vec::new(),
                perms: root_perms,
                children: Vec::new(),
                gen: 0,
            },
        );
        Tree {
            nodes,
            gen: 0,
            owned: HashMap::new(),
        }
    }

    pub fn get(&self, p: &str) -> Option<&Node> {
        self.nodes.get(p)
    }

    fn gen_of(&self, p: &str) -> Option<u64> {
        self.nodes.get(p).map(|n| n.gen)
    }

    fn count(&mut self, p: &str, owner: u16, delta: isize) {
        if p != "/" {
            let c = self.owned.entry(owner).or_default();
            *c = c.saturating_add_signed(delta);
        }
    }

    pub fn put(&mut self, p: &str, mut node: Node) {
        self.gen += 1;
        node.gen = self.gen;
        let new_owner = node.owner();
        if let Some(old) = self.nodes.insert(p.to_owned(), node) {
            self.count(p, old.owner(), -1);
        }
        self.count(p, new_owner, 1);
    }

    pub fn del(&mut self, p: &str) {
        if let Some(old) = self.nodes.remove(p) {
            self.count(p, old.owner(), -1);
        }
    }

    pub fn owned(&self, domid: u16) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// An open transaction: its own changes, what it saw, and its pending events.
#[derive(Debug, Default)]
pub(crate) struct Tx {
    overlay: HashMap<String, Option<Node>>,
    /// Generation (or absence) of each committed node the transaction read or wrote, when it
    /// first did.
    accessed: HashMap<String, Option<u64>>,
    events: Vec<Event>,
    delta: HashMap<u16, isize>,
}

impl Tx {
    /// Whether anything the transaction depended on changed since.
    pub fn conflicts(&self, tree: &Tree) -> bool {
        self.accessed.iter().any(|(p, g)| tree.gen_of(p) != *g)
    }

    /// Node-count changes per owner the commit would make.
    pub fn delta(&self) -> &HashMap<u16, isize> {
        &self.delta
    }

    /// Applies the changes; returns the events to fire.
    pub fn commit(self, tree: &mut Tree) -> Vec<Event> {
        for (p, n) in self.overlay {
            match n {
                Some(n) => tree.put(&p, n),
                None => tree.del(&p),
            }
        }
        self.events
    }
}

/// Reads and writes, either straight to the tree or into a transaction.
pub(crate) struct View<'a> {
    pub tree: &'a mut Tree,
    pub tx: Option<&'a mut Tx>,
    /// Events of direct (non-transaction) changes, for the caller to fire.
    pub events: Vec<Event>,
}

impl View<'_> {
    pub fn get(&mut self, p: &str) -> Option<Node> {
        match &mut self.tx {
            None => self.tree.get(p).cloned(),
            Some(tx) => {
                if let Some(n) = tx.overlay.get(p) {
                    return n.clone();
                }
                let n = self.tree.get(p).cloned();
                tx.accessed
                    .entry(p.to_owned())
                    .or_insert(n.as_ref().map(|n| n.gen));
                n
            }
        }
    }

    pub fn put(&mut self, p: &str, node: Node) {
        match &mut self.tx {
            None => self.tree.put(p, node),
            Some(_) => {
                let old = self.get(p);
                let tx = self.tx.as_mut().expect("checked above");
                if let Some(old) = old {
                    if p != "/" {
                        *tx.delta.entry(old.owner()).or_default() -= 1;
                    }
                }
                if p != "/" {
                    *tx.delta.entry(node.owner()).or_default() += 1;
                }
                tx.overlay.insert(p.to_owned(), Some(node));
            }
        }
    }

    pub fn del(&mut self, p: &str) {
        match &mut self.tx {
            None => self.tree.del(p),
            Some(_) => {
                let old = self.get(p);
                let tx = self.tx.as_mut().expect("checked above");
                if let Some(old) = old {
                    *tx.delta.entry(old.owner()).or_default() -= 1;
                }
                tx.overlay.insert(p.to_owned(), None);
            }
        }
    }

    /// Nodes `domid` owns as this view sees them.
    pub fn owned(&self, domid: u16) -> usize {
        let base = self.tree.owned(domid) as isize;
        let d = self
            .tx
            .as_ref()
            .and_then(|t| t.delta.get(&domid))
            .copied()
            .unwrap_or(0);
        (base + d).max(0) as usize
    }

    pub fn event(&mut self, path: &str, perms: Vec<Perm>, recursive: bool) {
        let ev = Event {
            path: path.to_owned(),
            perms,
            recursive,
        };
        match &mut self.tx {
            None => self.events.push(ev),
            Some(tx) => tx.events.push(ev),
        }
    }

    /// Removes `p` and everything below it (iteratively: depth is bounded only by path length).
    pub fn del_subtree(&mut self, p: &str) {
        let mut stack = vec![p.to_owned()];
        while let Some(q) = stack.pop() {
            if let Some(n) = self.get(&q) {
                stack.extend(n.children.iter().map(|c| path::join(&q, c)));
                self.del(&q);
            }
        }
    }
}
