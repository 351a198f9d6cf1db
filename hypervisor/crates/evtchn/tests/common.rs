#![allow(dead_code)]

use evtchn::{Caller, Config, Registry, VecBits};

pub const DOM0: Caller = Caller::new(0, true);
pub const DOMU: Caller = Caller::new(1, false);
pub const DOMU2: Caller = Caller::new(2, false);

/// dom0 (privileged, 4 vCPUs), dom1 and dom2 (2 vCPUs each); all ports unmasked.
pub fn registry() -> Registry<VecBits> {
    let mut r = Registry::new();
    r.add(0, Config::new(4), VecBits::new(4)).unwrap();
    r.add(1, Config::new(2), VecBits::new(2)).unwrap();
    r.add(2, Config::new(2), VecBits::new(2)).unwrap();
    r
}

pub fn bits(r: &Registry<VecBits>, dom: u16) -> &VecBits {
    &r.get(dom).unwrap().bits
}

pub fn bits_mut(r: &mut Registry<VecBits>, dom: u16) -> &mut VecBits {
    &mut r.get_mut(dom).unwrap().bits
}
