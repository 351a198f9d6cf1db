//! `xenstore`: Xen's xenstore tools in one binary. Symlink it as `xenstore-read`,
//! `xenstore-write`, `xenstore-ls`, `xenstore-rm`, `xenstore-exists`, `xenstore-list`,
//! `xenstore-watch` or `xenstore-chmod`, or run `xenstore <mode> ...`.
#![deny(unsafe_code)]

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let status = xenstore_cli::cli::run(&argv, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(status);
}
