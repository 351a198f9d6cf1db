//! The boot sequence, from the trampoline's call to the idle loop, and the fatal paths.
#![allow(unsafe_code)]

use crate::arch::x86::smp::{self, BackendKind};
use crate::arch::x86::{cpu, exceptions, gdt, lapic, percpu, pic, power, xcr};
use crate::cmdline::{self, DomuSpec, IdleAction, ModuleLine, Options};
use crate::cmdline::{BackendChoice, SelfTest};
use crate::domain::build::{build, GuestModule, PvhConfig};
use crate::domain::{DomId, DomainEnd, SchedParams};
use crate::hvm::{Backend, BackendError};
use crate::mm::frame::{self, FrameAllocator, PhysRange, FRAME_SIZE};
use crate::mm::{heap, paging, phys};
use crate::schedule::{self, Hv};
use crate::svm::Svm;
use crate::time;
use crate::{console, println};
use ferrovisor_boot::entry::image_layout;
use ferrovisor_boot::{BootInfo, MemoryKind};
use log::{info, warn};
use spin::Once;

/// The options in force, for code that runs after boot (fatal paths included).
static OPTIONS: Once<Options> = Once::new();
/// The CPUs to start, from the firmware's MADT and `maxcpus=`.
static HOST_CPUS: Once<smp::HostCpus> = Once::new();
/// The firmware's memory map (the AP trampoline must lie in usable RAM).
static MEMORY_MAP: Once<arrayvec::ArrayVec<ferrovisor_boot::MemoryRegion, 128>> = Once::new();

/// Most memory held for dom0 at boot (`mm::dom0ram`): `dom0_mem=` up to the whole
/// 4 GiB below the MMIO hole (dom0's RAM is identity-mapped there).
const DOM0_HOLD_CAP: u64 = 0xf000_0000;

/// Below this, memory is left to firmware structures and the AP start-up trampoline
/// (`arch::x86::smp::TRAMPOLINE`).
const LOW_MEMORY_END: u64 = 0x10_0000;

/// Entered from the boot trampoline with the loader's magic and information address.
#[no_mangle]
extern "C" fn ferrovisor_main(magic: u32, info_addr: u32) -> ! {
    console::configure(Options::default().console);
    gdt::init();
    exceptions::init();
    pic::mask_all();

    let mut boot = match BootInfo::parse(magic, u64::from(info_addr), &phys::BootMemory) {
        Ok(b) => b,
        Err(e) => fatal(format_args!("cannot use the boot information: {e}")),
    };
    let parsed = cmdline::parse(&boot.cmdline);
    let options = *OPTIONS.call_once(|| parsed.options);
    console::configure(options.console);
    console::set_log_level(options.loglvl);

    let cpu = cpu::identify();
    banner(&boot, &cpu);
    for d in &parsed.diagnostics {
        warn!("cmdline: {d}");
    }
    if parsed.dropped > 0 {
        warn!("cmdline: {} more problems not shown", parsed.dropped);
    }
    drop(parsed);

    let image = image_layout();
    log::debug!(
        "image: text {:#x}-{:#x}, rodata {:#x}-{:#x}, data+bss {:#x}-{:#x}, boot stack top {:#x}",
        image.image_start,
        image.text_end,
        image.rodata_start,
        image.rodata_end,
        image.data_start,
        image.image_end,
        image.boot_stack_top
    );
    HOST_CPUS.call_once(|| enumerate_cpus(&boot, &options));
    MEMORY_MAP.call_once(|| boot.memory_map.iter().copied().collect());
    init_frames(&boot);
    if !boot.modules.is_empty() {
        // dom0's RAM, held before anything else allocates (`mm::dom0ram`), leaving boot
        // what it needs meanwhile: the heap and frame table, copies of the modules, and
        // the decompressed kernel (xz and gzip kernels inflate about eightfold).
        let modules: u64 = boot.modules.iter().map(|m| m.len).sum();
        let kernel = boot.modules[0].len;
        let boot_needs = (96 << 20) + modules + 10 * kernel;
        let bytes = options.dom0_mem.unwrap_or(u64::MAX);
        let free = phys::FRAMES
            .lock()
            .as_ref()
            .map_or(0, |f| f.free_frames() * FRAME_SIZE);
        let spare = free.saturating_sub(boot_needs);
        crate::mm::dom0ram::hold(bytes.min(spare).min(DOM0_HOLD_CAP));
    }
    let mut frames_guard = phys::FRAMES.lock();
    let Some(frames) = frames_guard.as_mut() else {
        fatal(format_args!("frame allocator missing"))
    };
    match paging::init(&boot, &image, frames, cpu.virt.page_1g) {
        Ok(r) if r.violations == 0 => info!(
            "W^X check: {} leaf mappings, {} pages checked, 0 writable+executable: OK",
            r.leaves, r.pages
        ),
        Ok(r) => fatal(format_args!(
            "W^X check FAILED: {} writable+executable mappings",
            r.violations
        )),
        Err(e) => fatal(format_args!("cannot build the hypervisor page tables: {e}")),
    }
    match heap::init(frames) {
        Ok((base, size)) => info!("heap: {} MiB at {base:#x}", size >> 20),
        Err(e) => fatal(format_args!("cannot set up the heap: {e}")),
    }
    // The instruction decoder builds its tables on first use: do it now, not on a
    // guest's first MMIO exit.
    x86_emu::warm_up();
    let strings = crate::arch::x86::strings::measure();
    info!(
        "CPU: rep movsb copies 64 KiB in {} cycles, rep movsq in {}: fast-string hints {} guests",
        strings.movsb_cycles,
        strings.movsq_cycles,
        if strings.fast {
            "passed on to"
        } else {
            "hidden from"
        }
    );
    info!(
        "mm: {} of {} frames free ({} MiB)",
        frames.free_frames(),
        frames.total_frames(),
        (frames.free_frames() * FRAME_SIZE) >> 20
    );
    drop(frames_guard);
    let moved = crate::mm::dom0ram::relocate_modules(&mut boot);
    if moved > 0 {
        info!(
            "dom0 RAM: {} MiB held from {:#x} up, {moved} boot module(s) moved above it",
            (crate::mm::dom0ram::held_frames() * FRAME_SIZE) >> 20,
            crate::mm::dom0ram::WINDOW_START
        );
    }
    crate::mm::frametable::global::init(phys::mapped_limit());
    // The page tables, heap and frame table just built are the hypervisor's for good
    // (and so are the modules' copies); dom0's held RAM is not.
    let held = crate::mm::dom0ram::runs();
    if let Some(frames) = phys::FRAMES.lock().as_mut() {
        for r in frames.pin_allocated(&held) {
            log::debug!("mm: frames {:#x}-{:#x} pinned", r.start, r.end);
        }
    }

    let tb = time::init();
    info!(
        "time: TSC {}.{:03} MHz",
        tb.tsc_hz / 1_000_000,
        tb.tsc_hz / 1000 % 1000
    );
    percpu::init_boot_cpu();
    lapic::init(tb.tsc_hz);
    crate::arch::x86::ioapic::init();
    crate::arch::x86::cr4::init();
    if xcr::init() {
        log::debug!("XSAVE enabled for guests");
    }
    selftest(options.selftest);
    start_domains(&boot, &options, &cpu);
    idle(&options)
}

/// Prints who we are, what we run on and what the boot loader gave us.
fn banner(boot: &BootInfo, cpu: &cpu::CpuInfo) {
    println!("ferrovisor {} (x86_64) starting", env!("CARGO_PKG_VERSION"));
    info!(
        "CPU: {} family {:#x} model {:#x} stepping {} \"{}\"",
        cpu.vendor, cpu.family, cpu.model, cpu.stepping, cpu.brand
    );
    info!("CPU virtualization: {}", cpu.virt);
    info!("boot loader: \"{}\" ({})", boot.loader_name, boot.protocol);
    info!("command line: \"{}\"", boot.cmdline);
    info!(
        "memory map ({} entries, {} MiB usable):",
        boot.memory_map.len(),
        boot.usable_bytes() >> 20
    );
    for r in &boot.memory_map {
        info!(
            "  [{:#018x}-{:#018x}] {}",
            r.start,
            r.end().saturating_sub(1),
            r.kind
        );
    }
    info!("modules: {}", boot.modules.len());
    for (i, m) in boot.modules.iter().enumerate() {
        info!(
            "  module {i}: \"{}\" at {:#x}, {} bytes",
            m.cmdline, m.start, m.len
        );
    }
    if boot.truncated {
        warn!("boot information was longer than kept; some entries were dropped");
    }
}

/// The APIC ids of the CPUs to start (the boot CPU's first), from the firmware's MADT and
/// `maxcpus=`. With no usable MADT, the boot CPU alone (and the log says why).
fn enumerate_cpus(boot: &BootInfo, options: &Options) -> smp::HostCpus {
    use smp::HostCpus;
    let bsp = cpu::initial_apic_id();
    let limit = (options.maxcpus.unwrap_or(u32::MAX) as usize).min(percpu::MAX_CPUS);
    let (madt, rsdp, source) = match crate::acpi::read_madt(boot) {
        Ok(found) => found,
        Err(e) => {
            warn!("ACPI: {e}; running on the boot CPU alone");
            return HostCpus::boot_only(bsp);
        }
    };
    info!(
        "ACPI: RSDP revision {} {}, root table {}",
        rsdp.revision,
        source,
        crate::acpi::RootTable(&rsdp)
    );
    crate::arch::x86::ioapic::record(&madt);
    let enabled = madt.enabled().count();
    let capable = madt.cpus.len() - enabled;
    info!(
        "ACPI MADT: {enabled} enabled CPUs, {capable} online-capable (hot-plug; not started), \
         {} disabled, {} duplicate, {} beyond {} kept; local APIC at {:#x}",
        madt.disabled,
        madt.duplicates,
        madt.dropped,
        acpi_host::MAX_MADT_CPUS,
        madt.lapic_addr
    );
    let mut cpus = HostCpus::boot_only(bsp);
    if !madt.enabled().any(|c| c.apic_id == bsp) {
        warn!("ACPI MADT does not list the boot CPU (APIC id {bsp}); starting it anyway");
    }
    let mut skipped = 0;
    for c in madt.enabled().filter(|c| c.apic_id != bsp) {
        if cpus.apic_ids.len() >= limit || cpus.apic_ids.try_push(c.apic_id).is_err() {
            skipped += 1;
        }
    }
    if skipped > 0 {
        info!(
            "{skipped} CPU(s) left offline ({})",
            if options
                .maxcpus
                .is_some_and(|m| (m as usize) < percpu::MAX_CPUS)
            {
                "maxcpus="
            } else {
                "more than the per-CPU table holds"
            }
        );
    }
    cpus
}

/// Sets up the frame allocator over usable RAM minus the first MiB, the image and modules.
fn init_frames(boot: &BootInfo) {
    let image = paging::image_range(&image_layout());
    let mut reserved = arrayvec::ArrayVec::<PhysRange, 24>::new();
    reserved.push(PhysRange::new(0, LOW_MEMORY_END));
    reserved.push(image);
    // The modules' frames are managed (in use until dom0 is built: `dom0ram` moves them
    // and hands their frames to dom0), but the bitmap must not land on them.
    let (ranges, dropped) = frame::usable_ranges(&boot.memory_map, &reserved);
    if dropped > 0 {
        warn!("mm: {dropped} usable ranges dropped (too many)");
    }
    let mut off_limits = reserved.clone();
    for m in &boot.modules {
        let _ = off_limits.try_push(PhysRange::new(m.start, m.end()));
    }
    let (bitmap_ranges, _) = frame::usable_ranges(&boot.memory_map, &off_limits);
    let words = frame::bitmap_words(&ranges);
    let bytes = words as u64 * 8;
    let Some(place) = frame::place_bitmap(&bitmap_ranges, bytes, phys::mapped_limit()) else {
        fatal(format_args!(
            "no room below 4 GiB for the {bytes}-byte frame bitmap"
        ));
    };
    // SAFETY: `place` is usable RAM inside the boot direct map, reserved from the allocator
    // right below and never freed, so the slice is the only reference to that memory for
    // the rest of the hypervisor's life; u64 has no invalid bit patterns.
    let bitmap =
        unsafe { core::slice::from_raw_parts_mut(phys::to_virt(place.start).cast::<u64>(), words) };
    let mut alloc = match FrameAllocator::new(&ranges, bitmap) {
        Ok(a) => a,
        Err(e) => fatal(format_args!("frame allocator: {e}")),
    };
    alloc.reserve(place);
    for m in &boot.modules {
        alloc.reserve(PhysRange::new(m.start, m.end()));
    }
    let usable: u64 = boot
        .memory_map
        .iter()
        .filter(|r| r.kind == MemoryKind::Usable)
        .map(|r| r.len)
        .sum();
    info!(
        "mm: {} MiB usable, {} frames managed in {} ranges, bitmap {} KiB at {:#x}",
        usable >> 20,
        alloc.total_frames(),
        ranges.len(),
        bytes.div_ceil(1024),
        place.start
    );
    *phys::FRAMES.lock() = Some(alloc);
}

/// dom0's memory when `dom0_mem=` does not say: like Xen, most of what is free, keeping
/// a reserve for the hypervisor (and capped, since nothing else runs yet to use it).
/// `domus` is the memory the boot-time domUs will take.
fn default_dom0_mem(domus: u64) -> u64 {
    const RESERVE: u64 = 64 << 20;
    const CAP: u64 = 1 << 30;
    let held = crate::mm::dom0ram::held_frames() * FRAME_SIZE;
    let free = phys::FRAMES
        .lock()
        .as_ref()
        .map_or(0, |f| f.free_frames() * FRAME_SIZE);
    let mut bytes = (free + held)
        .saturating_sub(RESERVE)
        .saturating_sub(domus)
        .min(CAP);
    if held > 0 {
        // No more than is at the host's addresses for it.
        bytes = bytes.min(held + crate::domain::memory::CHUNK);
    }
    bytes & !((2 << 20) - 1)
}

/// One domain to build from the boot modules: a kernel module and the plain modules
/// after it (its initramfs), with what its command line asked for.
struct DomainPlan<'a> {
    kernel: &'a ferrovisor_boot::Module,
    name: &'a str,
    args: &'a str,
    domu: Option<DomuSpec<'a>>,
    modules: arrayvec::ArrayVec<&'a ferrovisor_boot::Module, 8>,
}

/// Groups the boot modules into domains: module 0 is domain 0's kernel, every module
/// marked `domu` starts the next domain, and other modules belong to the kernel before
/// them. A bad `domu` line is reported and that domain skipped.
fn plan_domains(boot: &BootInfo) -> alloc::vec::Vec<DomainPlan<'_>> {
    let mut plans: alloc::vec::Vec<DomainPlan<'_>> = alloc::vec::Vec::new();
    let mut skipping = false;
    for (i, m) in boot.modules.iter().enumerate() {
        match cmdline::parse_module_line(&m.cmdline) {
            ModuleLine::Domu(Ok(spec)) => {
                skipping = false;
                plans.push(DomainPlan {
                    kernel: m,
                    name: spec.name,
                    args: spec.kernel_args,
                    domu: Some(spec),
                    modules: arrayvec::ArrayVec::new(),
                });
            }
            ModuleLine::Domu(Err(e)) => {
                log::error!("module {i} (\"{}\"): {e}; not started", m.cmdline);
                skipping = true;
            }
            ModuleLine::Plain { name, args } => match plans.last_mut() {
                _ if i == 0 => plans.push(DomainPlan {
                    kernel: m,
                    name,
                    args,
                    domu: None,
                    modules: arrayvec::ArrayVec::new(),
                }),
                _ if skipping => {}
                Some(p) => {
                    let full = p.modules.try_push(m).is_err();
                    if full {
                        warn!("domain {name}: more than 8 modules; the rest are ignored");
                    }
                }
                None => {}
            },
        }
    }
    plans
}

/// Brings up the virtualization backend, builds every domain the boot modules describe
/// and hands the CPU to the scheduler. Returns only if nothing can run.
fn start_domains(boot: &BootInfo, options: &Options, cpu: &cpu::CpuInfo) {
    if boot.modules.is_empty() {
        start_aps(BackendKind::None);
        info!("no domain to start: no boot module given");
        return;
    }
    let want_svm = match options.hvm {
        BackendChoice::Auto => !cpu.virt.vmx && cpu.virt.svm,
        BackendChoice::Svm => true,
        BackendChoice::Vmx => false,
    };
    let spec = crate::arch::x86::spec::init(!want_svm);
    info!("speculation mitigations: {spec}");
    if want_svm {
        match Svm::init() {
            Ok(svm) => {
                info!("virtualization backend: {svm}");
                start_aps(BackendKind::Svm);
                boot_domains(svm, boot, options)
            }
            Err(e) => backend_unavailable("SVM", e),
        }
    } else {
        match crate::vmx::Vmx::init() {
            Ok(vmx) => {
                info!("virtualization backend: VMX backend: {vmx}");
                start_aps(BackendKind::Vmx);
                boot_domains(vmx, boot, options)
            }
            Err(e) => backend_unavailable("VMX", e),
        }
    }
}

/// Starts the other CPUs with the boot CPU's backend and checks each through a cross-CPU
/// call. They wait in their idle loops (the scheduler runs on the boot CPU).
fn start_aps(kind: BackendKind) {
    let (Some(cpus), Some(map)) = (HOST_CPUS.get(), MEMORY_MAP.get()) else {
        return;
    };
    if cpus.apic_ids.len() > 1 {
        info!("smp: starting {} more CPU(s)", cpus.apic_ids.len() - 1);
    }
    smp::start_aps(cpus, kind, map);
    smp::check_and_report(cpus);
}

fn backend_unavailable(name: &str, e: BackendError) {
    log::error!("{name} backend unavailable: {e}; no domain can run");
}

/// Builds the planned domains and runs the scheduler (never returns: when nothing is
/// left to run, the scheduler does what `on_idle=` says).
fn boot_domains<B: Backend>(backend: B, boot: &BootInfo, options: &Options) -> ! {
    let hv: &'static Hv<B> =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(Hv::new(backend, *options)));
    let plans = plan_domains(boot);
    let domus: u64 = plans
        .iter()
        .filter_map(|p| p.domu.as_ref())
        .map(|d| d.mem)
        .fold(0, u64::saturating_add);
    let mut next_domu: DomId = 1;
    for (i, plan) in plans.iter().enumerate() {
        let domid = if i == 0 {
            0
        } else {
            let id = next_domu;
            next_domu += 1;
            id
        };
        if plan.domu.is_some() && domid != 0 {
            hv.note_baseline();
        }
        if let Some(dom) = build_one(hv, domid, plan, options, domus) {
            let dom = alloc::sync::Arc::new(dom);
            if !hv.start_domain(dom) {
                log::error!("domain {domid}: id already in use");
            }
        }
    }
    schedule::run(hv)
}

/// Builds one domain (paused); reports and returns None on failure.
fn build_one<B: Backend>(
    hv: &Hv<B>,
    domid: DomId,
    plan: &DomainPlan<'_>,
    options: &Options,
    domus: u64,
) -> Option<crate::domain::Domain<B>> {
    let name = plan.name;
    let module = plan.kernel;
    let Some(kernel) =
        ferrovisor_boot::PhysRead::bytes(&phys::BootMemory, module.start, module.len)
    else {
        log::error!(
            "domain {domid} ({name}): module at {:#x} (+{:#x}) is not in memory",
            module.start,
            module.len
        );
        return None;
    };
    let started = time::now().1;
    let elf = match crate::domain::kernel::extract(kernel) {
        Ok(elf) => {
            if let crate::domain::kernel::KernelElf::Owned { len, .. } = &elf {
                let ms = (time::now().1 - started) / 1_000_000;
                info!(
                    "domain {domid} ({name}): kernel decompressed, {} KiB in {ms} ms",
                    len >> 10
                );
            }
            elf
        }
        Err(e) => {
            log::error!("domain {domid} ({name}): cannot build: {e}");
            return None;
        }
    };
    let mut extra: arrayvec::ArrayVec<GuestModule<'_>, 8> = arrayvec::ArrayVec::new();
    for m in &plan.modules {
        let Some(bytes) = ferrovisor_boot::PhysRead::bytes(&phys::BootMemory, m.start, m.len)
        else {
            log::error!(
                "domain {domid} ({name}): module at {:#x} is not in memory",
                m.start
            );
            return None;
        };
        extra.push(GuestModule {
            bytes,
            cmdline: &m.cmdline,
        });
    }
    let (memory_bytes, vcpus, params) = match &plan.domu {
        Some(d) => (
            d.mem,
            d.vcpus,
            SchedParams {
                weight: d.weight,
                cap: d.cap,
                cpus: d.cpus,
            },
        ),
        None => (
            options.dom0_mem.unwrap_or_else(|| default_dom0_mem(domus)),
            options.dom0_max_vcpus,
            SchedParams {
                weight: 256,
                cap: 0,
                cpus: options.dom0_cpus,
            },
        ),
    };
    let cfg = PvhConfig {
        domid,
        name,
        kernel: elf.bytes(),
        cmdline: plan.args,
        memory_bytes,
        modules: &extra,
        initial: domid == 0 && plan.domu.is_none(),
        vcpus,
        params,
        identity: MEMORY_MAP
            .get()
            .filter(|_| domid == 0 && plan.domu.is_none())
            .map(|map| crate::domain::build::Identity {
                take: crate::mm::dom0ram::take,
                release: crate::mm::dom0ram::release,
                host_map: map,
            }),
    };
    let building = time::now().1;
    let built = build(&hv.backend, &cfg);
    // What dom0 did not take of its held RAM (all of it, if dom0 is not a Linux dom0
    // or could not be built) goes back before any other domain is built.
    let back = crate::mm::dom0ram::release();
    if back > 0 {
        log::debug!("dom0 RAM: {back} held frames freed");
    }
    let dom = match built {
        Ok(d) => d,
        Err(e) => {
            log::error!("domain {domid} ({name}): cannot build: {e}");
            return None;
        }
    };
    info!(
        "domain {domid} ({name}): built in {} ms (memory populated, kernel and modules loaded)",
        (time::now().1 - building) / 1_000_000
    );
    info!(
        "domain {} ({}): {} MiB, {} backend, {}starting",
        dom.id,
        dom.name,
        (dom.mem.host_frames() * FRAME_SIZE) >> 20,
        B::NAME,
        if dom.is_control() {
            "privileged (dom0), "
        } else {
            ""
        }
    );
    log::debug!(
        "domain {}: {} host frames of RAM, {} vCPUs, weight {}, cap {}%",
        dom.id,
        dom.mem.host_frames(),
        dom.vcpus.len(),
        params.weight,
        params.cap
    );
    Some(dom)
}

/// What the machine does when dom0 ends, as on Xen: power off with it, reboot with it,
/// and after a crash reboot unless `noreboot` (then halt, keeping the report on screen).
pub(crate) fn dom0_ended(end: DomainEnd) {
    let noreboot = OPTIONS.get().is_some_and(|o| o.noreboot);
    match end {
        DomainEnd::Shutdown(0) => power::poweroff(0),
        DomainEnd::Shutdown(1) => power::reboot(),
        _ if noreboot => {
            info!("dom0 is gone; halting (noreboot)");
            stop(0)
        }
        _ => {
            info!("dom0 is gone; rebooting (use noreboot to halt instead)");
            power::reboot()
        }
    }
}

/// Provokes the fault `selftest=` asks for, so tests can check the fatal reports and
/// that the stack guard page works.
fn selftest(which: SelfTest) {
    match which {
        SelfTest::None => {}
        SelfTest::PageFault => {
            info!("selftest: writing through a null pointer");
            // SAFETY: deliberately invalid: nothing is mapped at address 8, so the write
            // faults before touching memory; the exception handler reports and stops.
            unsafe { core::ptr::write_volatile(core::hint::black_box(8usize) as *mut u64, 0) };
        }
        SelfTest::Panic => panic!("selftest: deliberate panic"),
        SelfTest::StackOverflow => {
            info!("selftest: recursing into the stack guard page");
            core::hint::black_box(recurse(0));
        }
    }
}

/// Uses 512 bytes of stack per call until the guard page stops it.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 64]);
    if depth == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1).wrapping_add(frame[63])
}

/// Nothing (yet) to run: do what `on_idle=` says (once: another CPU that finds the same
/// halts quietly).
pub(crate) fn idle(options: &Options) -> ! {
    static DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, core::sync::atomic::Ordering::SeqCst) {
        power::halt()
    }
    match options.on_idle {
        IdleAction::Poweroff => {
            info!("nothing to run; powering off (on_idle=poweroff)");
            power::poweroff(0)
        }
        IdleAction::Halt => {
            info!("nothing to run; halting (on_idle=poweroff would power off)");
            power::halt()
        }
    }
}

/// Reports a fatal boot error and stops.
fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    console::force_unlock();
    println!("*** ferrovisor: FATAL: {args}");
    fatal_stop()
}

/// The end of every fatal path: stop with a failure code.
pub fn fatal_stop() -> ! {
    stop(1)
}

/// Stops the machine for good: powers off with `code` when the test harness asked for
/// power-off (`on_idle=poweroff`), so tests end at once; halts otherwise, so the last
/// messages stay on screen.
fn stop(code: u32) -> ! {
    match OPTIONS.get().map(|o| o.on_idle) {
        Some(IdleAction::Poweroff) => power::poweroff(code),
        _ => power::halt(),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::force_unlock();
    match info.location() {
        Some(l) => println!(
            "*** HYPERVISOR PANIC at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        ),
        None => println!("*** HYPERVISOR PANIC: {}", info.message()),
    }
    fatal_stop()
}
