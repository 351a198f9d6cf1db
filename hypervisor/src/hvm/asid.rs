//! TLB tags (SVM ASIDs, VMX VPIDs) recycled by generation. Pure, host-tested.
//!
//! Each CPU hands out tags 1..limit (0 is the host's) in order. A vCPU remembers the tag
//! it got with the CPU and generation it got it in; when it is loaded on a CPU and that
//! pair is stale (another CPU, or this CPU started a new generation since), it takes the
//! next free tag. When the tags run out, the CPU starts a new generation: the whole TLB
//! must be flushed for every tag (SVM: TLB_CONTROL = 1 at the next VMRUN; VMX: INVVPID
//! all-context) and numbering starts again at 1. Within one generation a tag is handed
//! out once, so a vCPU never inherits another's stale translations, and destroyed vCPUs
//! need no flush of their tag. The first allocation on a CPU always starts a generation
//! (and so flushes), whatever the TLB held before.

/// A vCPU's tag and where it is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbTag {
    pub cpu: u32,
    pub generation: u64,
    pub tag: u32,
}

/// What loading a vCPU decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub tag: TlbTag,
    /// The tag differs from the one the vCPU had: write it to the VMCB/VMCS.
    pub changed: bool,
    /// A new generation began: flush every tag's translations on this CPU before the
    /// next guest entry.
    pub flush_all: bool,
}

/// One CPU's allocator.
#[derive(Debug)]
pub struct AsidAllocator {
    generation: u64,
    next: u32,
}

impl Default for AsidAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl AsidAllocator {
    /// An allocator whose first assignment starts generation 1 (with a flush).
    pub const fn new() -> AsidAllocator {
        AsidAllocator {
            generation: 0,
            next: u32::MAX,
        }
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Checks the tag of a vCPU being loaded on CPU `cpu`, whose hardware offers tags
    /// `1..limit` (`limit` >= 2). `current` is what the vCPU holds (None: never assigned).
    pub fn assign(&mut self, cpu: u32, limit: u32, current: Option<TlbTag>) -> Assignment {
        assert!(limit >= 2, "no tag besides the host's");
        if let Some(t) = current {
            if t.cpu == cpu && t.generation == self.generation && self.generation != 0 {
                return Assignment {
                    tag: t,
                    changed: false,
                    flush_all: false,
                };
            }
        }
        let mut flush_all = false;
        if self.next >= limit || self.generation == 0 {
            self.generation += 1;
            self.next = 1;
            flush_all = true;
        }
        let tag = TlbTag {
            cpu,
            generation: self.generation,
            tag: self.next,
        };
        self.next += 1;
        Assignment {
            tag,
            changed: current.map(|c| c.tag) != Some(tag.tag),
            flush_all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_assignment_starts_a_generation_with_a_flush() {
        let mut a = AsidAllocator::new();
        let r = a.assign(0, 16, None);
        assert_eq!(
            r.tag,
            TlbTag {
                cpu: 0,
                generation: 1,
                tag: 1
            }
        );
        assert!(r.flush_all && r.changed);
        let r2 = a.assign(0, 16, None);
        assert_eq!(r2.tag.tag, 2);
        assert!(!r2.flush_all);
    }

    #[test]
    fn a_current_tag_is_kept() {
        let mut a = AsidAllocator::new();
        let t = a.assign(0, 16, None).tag;
        let r = a.assign(0, 16, Some(t));
        assert_eq!(r.tag, t);
        assert!(!r.changed && !r.flush_all);
    }

    #[test]
    fn a_tag_from_another_cpu_is_replaced() {
        let mut a = AsidAllocator::new();
        let _ = a.assign(1, 16, None);
        let foreign = TlbTag {
            cpu: 0,
            generation: 1,
            tag: 1,
        };
        let r = a.assign(1, 16, Some(foreign));
        assert_eq!(r.tag.cpu, 1);
        assert_eq!(r.tag.tag, 2);
        assert!(!r.flush_all);
    }

    /// More vCPUs than QEMU's 16 ASIDs, created and destroyed over time: tags never repeat
    /// within a generation, every wrap flushes, and live vCPUs from an old generation get
    /// fresh tags when loaded again.
    #[test]
    fn running_out_bumps_the_generation_and_never_reuses_a_tag_unflushed() {
        let mut a = AsidAllocator::new();
        let limit = 16;
        let mut seen = std::collections::HashSet::new();
        let mut flushes = 0;
        let mut tags = Vec::new();
        for _ in 0..100 {
            let r = a.assign(0, limit, None);
            if r.flush_all {
                flushes += 1;
                seen.clear();
            }
            assert!((1..limit).contains(&r.tag.tag));
            assert!(
                seen.insert(r.tag.tag),
                "tag {} reused within a generation",
                r.tag.tag
            );
            tags.push(r.tag);
        }
        // 15 tags per generation: 100 vCPUs need 7 generations.
        assert_eq!(flushes, 7);
        assert_eq!(a.generation(), 7);
        // A vCPU from generation 1 loaded again gets a new tag of the current generation.
        let old = tags[0];
        let r = a.assign(0, limit, Some(old));
        assert_eq!(r.tag.generation, 7);
        assert!(r.changed || r.tag.tag != old.tag || r.flush_all);
        assert!(!seen.contains(&r.tag.tag) || r.flush_all);
    }

    #[test]
    fn two_alternating_vcpus_keep_their_tags() {
        let mut a = AsidAllocator::new();
        let x = a.assign(0, 16, None).tag;
        let y = a.assign(0, 16, None).tag;
        for _ in 0..10 {
            assert_eq!(a.assign(0, 16, Some(x)).tag, x);
            assert_eq!(a.assign(0, 16, Some(y)).tag, y);
        }
    }
}
