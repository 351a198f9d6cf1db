//! `HVM_PARAM_*` indices for `HVMOP_{set,get}_param`, and the callback-via encoding.
//!
//! Source: `xen/include/public/hvm/params.h`, interface version 0x00040d00 (x86 values).

/// Event-channel upcall delivery method; see [`CallbackVia`].
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// GFN of the xenstore ring page (0 = no xenstore).
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// Event-channel port of the xenstore ring.
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// PAE enabled (legacy HVM).
pub const HVM_PARAM_PAE_ENABLED: u32 = 4;
/// GFN of the synchronous ioreq page.
pub const HVM_PARAM_IOREQ_PFN: u32 = 5;
/// GFN of the buffered ioreq page.
pub const HVM_PARAM_BUFIOREQ_PFN: u32 = 6;
/// Viridian enlightenments.
pub const HVM_PARAM_VIRIDIAN: u32 = 9;
/// Timer mode (`HVMPTM_*`).
pub const HVM_PARAM_TIMER_MODE: u32 = 10;
/// HPET enabled.
pub const HVM_PARAM_HPET_ENABLED: u32 = 11;
/// Identity-map page table GFN (for unrestricted-guest-less VMX).
pub const HVM_PARAM_IDENT_PT: u32 = 12;
/// Device-model domain.
pub const HVM_PARAM_DM_DOMAIN: u32 = 13;
/// ACPI S state.
pub const HVM_PARAM_ACPI_S_STATE: u32 = 14;
/// VM86 TSS address.
pub const HVM_PARAM_VM86_TSS: u32 = 15;
/// Align virtual platform timers.
pub const HVM_PARAM_VPT_ALIGN: u32 = 16;
/// GFN of the PV console ring page (0 = no console).
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// Event-channel port of the PV console ring.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// Location of the ACPI PM I/O ports.
pub const HVM_PARAM_ACPI_IOPORTS_LOCATION: u32 = 19;
/// Memory-event CR0 (legacy).
pub const HVM_PARAM_MEMORY_EVENT_CR0: u32 = 20;
/// Memory-event CR3 (legacy).
pub const HVM_PARAM_MEMORY_EVENT_CR3: u32 = 21;
/// Memory-event CR4 (legacy).
pub const HVM_PARAM_MEMORY_EVENT_CR4: u32 = 22;
/// Memory-event INT3 (legacy).
pub const HVM_PARAM_MEMORY_EVENT_INT3: u32 = 23;
/// Nested HVM enabled.
pub const HVM_PARAM_NESTEDHVM: u32 = 24;
/// Memory-event single step (legacy).
pub const HVM_PARAM_MEMORY_EVENT_SINGLE_STEP: u32 = 25;
/// Buffered ioreq event channel.
pub const HVM_PARAM_BUFIOREQ_EVTCHN: u32 = 26;
/// Paging ring GFN.
pub const HVM_PARAM_PAGING_RING_PFN: u32 = 27;
/// Monitor ring GFN.
pub const HVM_PARAM_MONITOR_RING_PFN: u32 = 28;
/// Sharing ring GFN.
pub const HVM_PARAM_SHARING_RING_PFN: u32 = 29;
/// Memory-event MSR (legacy).
pub const HVM_PARAM_MEMORY_EVENT_MSR: u32 = 30;
/// Shutdown reason applied on a triple fault (default reboot).
pub const HVM_PARAM_TRIPLE_FAULT_REASON: u32 = 31;
/// First ioreq-server GFN.
pub const HVM_PARAM_IOREQ_SERVER_PFN: u32 = 32;
/// Number of ioreq-server pages.
pub const HVM_PARAM_NR_IOREQ_SERVER_PAGES: u32 = 33;
/// VM generation id address.
pub const HVM_PARAM_VM_GENERATION_ID_ADDR: u32 = 34;
/// altp2m mode.
pub const HVM_PARAM_ALTP2M: u32 = 35;
/// x87 FIP width.
pub const HVM_PARAM_X87_FIP_WIDTH: u32 = 36;
/// VM86 TSS address and size.
pub const HVM_PARAM_VM86_TSS_SIZED: u32 = 37;
/// MCA capabilities.
pub const HVM_PARAM_MCA_CAP: u32 = 38;
/// Number of parameters.
pub const HVM_NR_PARAMS: u32 = 39;

/// Timer mode: delay for missed ticks.
pub const HVMPTM_DELAY_FOR_MISSED_TICKS: u64 = 0;
/// Timer mode: no delay for missed ticks.
pub const HVMPTM_NO_DELAY_FOR_MISSED_TICKS: u64 = 1;
/// Timer mode: no missed ticks pending.
pub const HVMPTM_NO_MISSED_TICKS_PENDING: u64 = 2;
/// Timer mode: one missed tick pending.
pub const HVMPTM_ONE_MISSED_TICK_PENDING: u64 = 3;

/// Mask of the type field of `HVM_PARAM_CALLBACK_IRQ` (bits 63..56).
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_MASK: u64 = 0xFF00_0000_0000_0000;
/// Shift of the type field.
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT: u32 = 56;
/// Callback type: GSI in bits 55..0 (GSI 0 cannot be used).
pub const HVM_PARAM_CALLBACK_TYPE_GSI: u8 = 0;
/// Callback type: PCI INTx (domain 47..32, bus 31..16, devfn 15..8, INTx 1..0).
pub const HVM_PARAM_CALLBACK_TYPE_PCI_INTX: u8 = 1;
/// Callback type (x86): vector in bits 7..0, injected directly (no LAPIC, no EOI).
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u8 = 2;

/// Decoded `HVM_PARAM_CALLBACK_IRQ` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallbackVia {
    /// Value 0: notifications disabled.
    None,
    /// Type 0: a GSI.
    Gsi(u64),
    /// Type 1: a PCI INTx line.
    PciIntx {
        /// PCI segment.
        domain: u16,
        /// Bus.
        bus: u16,
        /// Device/function.
        devfn: u8,
        /// INTx pin (0 = INTA).
        intx: u8,
    },
    /// Type 2: a vector (e.g. 0xF3).
    Vector(u8),
    /// Unknown type (raw type, raw value).
    Unknown(u8, u64),
}

impl CallbackVia {
    /// Decodes a raw parameter value.
    pub const fn decode(value: u64) -> Self {
        if value == 0 {
            return Self::None;
        }
        let ty = (value >> HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) as u8;
        let payload = value & !HVM_PARAM_CALLBACK_IRQ_TYPE_MASK;
        match ty {
            HVM_PARAM_CALLBACK_TYPE_GSI => Self::Gsi(payload),
            HVM_PARAM_CALLBACK_TYPE_PCI_INTX => Self::PciIntx {
                domain: (payload >> 32) as u16,
                bus: (payload >> 16) as u16,
                devfn: (payload >> 8) as u8,
                intx: (payload & 3) as u8,
            },
            HVM_PARAM_CALLBACK_TYPE_VECTOR => Self::Vector(payload as u8),
            _ => Self::Unknown(ty, value),
        }
    }

    /// Encodes as a raw parameter value.
    pub const fn encode(self) -> u64 {
        const fn with_type(ty: u8, payload: u64) -> u64 {
            ((ty as u64) << HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT)
                | (payload & !HVM_PARAM_CALLBACK_IRQ_TYPE_MASK)
        }
        match self {
            Self::None => 0,
            Self::Gsi(gsi) => with_type(HVM_PARAM_CALLBACK_TYPE_GSI, gsi),
            Self::PciIntx {
                domain,
                bus,
                devfn,
                intx,
            } => with_type(
                HVM_PARAM_CALLBACK_TYPE_PCI_INTX,
                ((domain as u64) << 32)
                    | ((bus as u64) << 16)
                    | ((devfn as u64) << 8)
                    | (intx as u64 & 3),
            ),
            Self::Vector(v) => with_type(HVM_PARAM_CALLBACK_TYPE_VECTOR, v as u64),
            Self::Unknown(_, raw) => raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_via_encoding() {
        assert_eq!(
            CallbackVia::decode(0x0200_0000_0000_00F3),
            CallbackVia::Vector(0xF3)
        );
        assert_eq!(CallbackVia::Vector(0xF3).encode(), 0x0200_0000_0000_00F3);
        assert_eq!(CallbackVia::decode(1), CallbackVia::Gsi(1));
        assert_eq!(CallbackVia::decode(0), CallbackVia::None);
        let intx = CallbackVia::PciIntx {
            domain: 1,
            bus: 2,
            devfn: 0x18,
            intx: 1,
        };
        assert_eq!(CallbackVia::decode(intx.encode()), intx);
        assert_eq!(
            CallbackVia::decode(0x0700_0000_0000_0001),
            CallbackVia::Unknown(7, 0x0700_0000_0000_0001)
        );
        assert_eq!(HVM_PARAM_CONSOLE_EVTCHN, 18);
        assert_eq!(HVM_PARAM_TRIPLE_FAULT_REASON, 31);
    }
}
