//! Host tests of [`super`] (exit decoding, error names, access rights, events).
use super::*;
use crate::hvm::GuestRegs;

#[test]
fn io_qualifications() {
    // OUT DX, AL to 0x3f8.
    assert_eq!(
        decode_io(0x3f8 << 16),
        IoAccess {
            port: 0x3f8,
            size: 1,
            write: true,
            string: false,
            rep: false
        }
    );
    // REP INSD from 0x1f0 (size 4, IN, string, rep).
    assert_eq!(
        decode_io(0x1f0 << 16 | 3 | 1 << 3 | 1 << 4 | 1 << 5),
        IoAccess {
            port: 0x1f0,
            size: 4,
            write: false,
            string: true,
            rep: true
        }
    );
}

#[test]
fn ept_violation() {
    let e = decode_ept_violation(
        0x2 | 1 << 7 | 1 << 8 | 0x8,
        0xfee0_0000,
        0xffff_8000_0000_1000,
    );
    assert_eq!(
        e,
        Exit::NestedPageFault {
            gpa: 0xfee0_0000,
            access: Access {
                read: false,
                write: true,
                execute: false,
                page_walk: false,
            },
            gla: Some(0xffff_8000_0000_1000)
        }
    );
    // Bit 7 without bit 8: the guest's own page-table walk hit the page.
    let e = decode_ept_violation(0x1 | 1 << 7, 0x5000, 0xdead);
    assert!(matches!(
        e,
        Exit::NestedPageFault {
            access: Access {
                page_walk: true,
                ..
            },
            ..
        }
    ));
    let e = decode_ept_violation(0x4, 0x1000, 0xdead);
    assert!(matches!(
        e,
        Exit::NestedPageFault {
            gla: None,
            access: Access { execute: true, .. },
            ..
        }
    ));
}

#[test]
fn cr_access() {
    // MOV CR0, RBX: cr 0, type 0, gpr 3.
    assert_eq!(decode_cr(3 << 8), CrAccess::MovTo { cr: 0, gpr: 3 });
    assert_eq!(
        decode_cr(3 | 1 << 4 | 15 << 8),
        CrAccess::MovFrom { cr: 3, gpr: 15 }
    );
    assert_eq!(decode_cr(2 << 4), CrAccess::Clts);
    assert_eq!(
        decode_cr(3 << 4 | 0x11 << 16),
        CrAccess::Lmsw { source: 0x11 }
    );
}

#[test]
fn classify_exits() {
    let raw = |reason, qualification| RawExit {
        reason,
        qualification,
        ..RawExit::default()
    };
    assert_eq!(classify(&raw(18, 0)), Action::Report(Exit::Hypercall));
    assert_eq!(classify(&raw(52, 0)), Action::Report(Exit::SliceExpired));
    assert_eq!(
        classify(&raw(28, 0)),
        Action::Cr(CrAccess::MovTo { cr: 0, gpr: 0 })
    );
    assert_eq!(
        classify(&raw(33 | 1 << 31, 0)),
        Action::Report(Exit::EntryFailed {
            reason: "VM-entry failure due to invalid guest state",
            detail: 0
        })
    );
    assert_eq!(
        classify(&raw(99, 7)),
        Action::Report(Exit::Unhandled {
            code: 99,
            qualification: 7
        })
    );
    let nmi = RawExit {
        interruption_info: 1 << 31 | 2 << 8 | 2,
        ..RawExit::default()
    };
    assert_eq!(classify(&nmi), Action::HostNmi);
}

#[test]
fn instruction_errors() {
    assert_eq!(
        instruction_error_name(7),
        "VM entry with invalid control field(s)"
    );
    assert_eq!(
        instruction_error_name(8),
        "VM entry with invalid host-state field(s)"
    );
    assert_eq!(instruction_error_name(14), "unknown VM-instruction error");
}

#[test]
fn access_rights_match_pvh_values() {
    assert_eq!(AccessRights::flat32(0xb).encode(), 0xc09b);
    assert_eq!(AccessRights::flat32(0x3).encode(), 0xc093);
    assert_eq!(AccessRights::TSS_BUSY.encode(), 0x8b);
    let code64 = AccessRights {
        l: true,
        db: false,
        ..AccessRights::flat32(0xb)
    };
    assert_eq!(code64.encode(), 0xa09b);
}

#[test]
fn event_encoding() {
    assert_eq!(
        interruption_info(Event::Interrupt(0xf3)),
        (0x8000_00f3, None)
    );
    assert_eq!(
        interruption_info(Event::Exception {
            vector: 13,
            error_code: Some(0)
        }),
        (0x8000_0b0d, Some(0))
    );
    assert_eq!(
        interruption_info(Event::Exception {
            vector: 6,
            error_code: None
        }),
        (0x8000_0306, None)
    );
    assert_eq!(
        interruption_info(Event::Exception {
            vector: 2,
            error_code: None
        }),
        (0x8000_0202, None)
    );
}

#[test]
fn gpr_numbers() {
    let mut r = GuestRegs {
        rcx: 1,
        rbx: 3,
        r15: 15,
        ..GuestRegs::default()
    };
    assert_eq!(r.by_encoding(1).copied(), Some(1));
    assert_eq!(r.by_encoding(3).copied(), Some(3));
    assert_eq!(r.by_encoding(15).copied(), Some(15));
    assert!(r.by_encoding(4).is_none());
}

#[test]
fn no_error_code_in_real_mode() {
    let gp = Event::Exception {
        vector: 13,
        error_code: Some(0),
    };
    assert_eq!(
        interruption_info_in_mode(gp, false),
        (1 << 31 | 3 << 8 | 13, None)
    );
    assert_eq!(
        interruption_info_in_mode(gp, true),
        (1 << 31 | 1 << 11 | 3 << 8 | 13, Some(0))
    );
}

#[test]
fn guest_vmx_instructions_fault_and_exceptions_are_reflected() {
    for reason in [
        11u32, 19, 20, 21, 22, 23, 24, 25, 26, 27, 36, 39, 50, 53, 59, 63, 64,
    ] {
        let raw = RawExit {
            reason,
            ..RawExit::default()
        };
        assert_eq!(classify(&raw), Action::Fault(UD), "reason {reason}");
    }
    let rdpmc = RawExit {
        reason: 15,
        ..RawExit::default()
    };
    assert_eq!(classify(&rdpmc), Action::Fault(GP0));
    let ac = RawExit {
        reason: 0,
        interruption_info: 1 << 31 | 1 << 11 | 3 << 8 | 17,
        ..RawExit::default()
    };
    assert_eq!(
        classify(&ac),
        Action::Reflect {
            info: ac.interruption_info,
            dr6: 0
        }
    );
    let mc = RawExit {
        reason: 0,
        interruption_info: 1 << 31 | 3 << 8 | 18,
        ..RawExit::default()
    };
    assert_eq!(classify(&mc), Action::MachineCheck);
}
