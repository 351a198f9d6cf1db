mod common;
use common::*;
#[test]
fn dbg() {
    let mut sim = Sim::new(1, Config::default());
    sim.trace = Some(Vec::new());
    let vs: Vec<VcpuRef> = (1..=10).map(|i| vr(i, 0)).collect();
    for (i, &v) in vs.iter().enumerate() {
        sim.add(v, w(i as u16 + 1), Affinity::ANY, Behaviour::Busy);
    }
    sim.run_until(1 * SEC);
    for (t, _c, d) in sim.trace.as_ref().unwrap().iter().take(400) {
        let n = d.next.unwrap();
        println!("{:8} us: dom {} slice {:?} credit {:?}", t / 1000, n.dom, d.slice.map(|s| s/1000), 0);
    }
    println!("resets {}", sim.s.resets());
}
