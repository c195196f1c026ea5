//! `kvm-hello`, the KVM lab kit's VMM: the labs called in the order of kvm-hello-world's `main`.
//!
//! The contract (options, output, JSON report, exit statuses) is in `cli::help()` and the book's
//! "kvm-hello reference" chapter; scripts and the grader rely on it.

pub mod cli;
pub mod explain;
pub mod labs;
pub mod report;
pub mod slices;
pub mod step;
pub mod vmm;

use std::path::Path;

use kit_common::{MAX_IMAGE_SIZE, Mode, Status};

/// The kit's own guest for a mode.
pub fn builtin_guest(mode: Mode) -> &'static [u8] {
    match mode {
        Mode::Long => guests::HELLO64,
        Mode::Protected | Mode::Paged32 => guests::HELLO32,
        Mode::Real => guests::HELLO16,
    }
}

/// Reads a guest image from a file and checks that it fits.
pub fn read_guest_image(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let image = std::fs::read(path).map_err(|err| format!("cannot read guest image '{shown}': {err}"))?;
    if image.is_empty() {
        return Err(format!("guest image '{shown}' is empty"));
    }
    if image.len() > MAX_IMAGE_SIZE {
        return Err(format!(
            "guest image '{shown}' is {} bytes; at most {MAX_IMAGE_SIZE} bytes fit below the page tables at 0x2000",
            image.len()
        ));
    }
    Ok(image)
}

/// Runs the command line and returns the process exit status.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Status {
    let options = match cli::parse(args) {
        Ok(cli::Command::Run(options)) => options,
        Ok(cli::Command::Help) => {
            report::print_stdout(&cli::help());
            return Status::Ok;
        }
        Ok(cli::Command::Version) => {
            report::print_stdout(&format!("kvm-hello {}\n", env!("CARGO_PKG_VERSION")));
            return Status::Ok;
        }
        Err(err) => {
            report::print_summary_line(&err.to_string());
            return Status::BadInput;
        }
    };
    let image = match &options.guest {
        Some(path) => match read_guest_image(path) {
            Ok(image) => image,
            Err(message) => {
                if options.json {
                    report::print_stdout(&format!(
                        "{}\n",
                        report::json_of_failure(options.mode, Status::BadInput, &message)
                    ));
                }
                report::print_summary_line(&message);
                return Status::BadInput;
            }
        },
        None if options.lab == Some(cli::ExtraLab::Hypercalls) => guests::HYPERCALLS64.to_vec(),
        None => builtin_guest(options.mode).to_vec(),
    };
    if options.lab == Some(cli::ExtraLab::Lwn) && options.guest.is_some() && image.len() > lab0_lwn::PAGE_SIZE {
        let message = format!(
            "--lab lwn runs its guest in the VM's one page at {:#x}: the image is {} bytes, at most {} fit",
            lab0_lwn::CODE_ADDR,
            image.len(),
            lab0_lwn::PAGE_SIZE
        );
        report::print_summary_line(&message);
        return Status::BadInput;
    }
    if options.gdb.is_some() && options.mode == kit_common::Mode::Real {
        report::print_summary_line(
            "--gdb does not support real mode (gdb's x86 targets are 32- and 64-bit): use --step --mode real, or \
             --mode long or protected (book: Debugging your guest)",
        );
        return Status::BadInput;
    }
    vmm::install_panic_hook(true);
    let config = vmm::RunConfig {
        labs: labs::Labs::BUILT,
        mode: options.mode,
        image,
        capture_output: options.json || options.explain || options.step,
        trace: options.trace,
        timeout: options.timeout,
        explain_walk: options.explain.then(|| options.walk.unwrap_or(kit_common::RESULT_ADDR)),
        program: if let Some(address) = options.gdb {
            vmm::Program::Gdb(vmm::GdbOptions {
                address,
                step_to_breakpoints: false,
            })
        } else if options.step {
            vmm::Program::Step(vmm::StepOptions {
                max_steps: options.step_limit(),
                json: options.json,
            })
        } else {
            vmm::Program::Hello
        },
    };
    let result = match options.lab {
        Some(cli::ExtraLab::Lwn) => vmm::run_lwn(
            labs::Labs::BUILT,
            options.guest.is_some().then(|| config.image.clone()),
            options.json,
            options.trace,
            options.timeout,
        ),
        Some(cli::ExtraLab::Hypercalls) => vmm::run(vmm::RunConfig {
            program: vmm::Program::Hypercalls,
            ..config
        }),
        Some(cli::ExtraLab::Schedule) => vmm::run_schedule(
            labs::Labs::BUILT,
            options.schedule.policy,
            options.schedule.duration,
            options.json,
            options.timeout,
        ),
        None => vmm::run(config),
    };
    let json = report::json(options.mode, options.lab, &result);
    if options.json {
        report::print_stdout(&format!("{json}\n"));
    }
    if let (Some(dir), Some(svg)) = (&options.svg, slices::svg(&json)) {
        let name = slices::file_name(options.schedule.policy.name());
        if let Err(err) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(dir.join(&name), svg)) {
            report::print_summary_line(&format!("cannot write {name} into '{}': {err}", dir.display()));
            return Status::BadInput;
        }
    }
    if let Some(explanation) = &result.explanation {
        report::print_stdout(&explain::text(explanation, &result.output));
        if let Some(dir) = &options.svg
            && let Err(err) = explain::write_svgs(explanation, dir)
        {
            report::print_summary_line(&format!(
                "cannot write the SVG pictures into '{}': {err}",
                dir.display()
            ));
            return Status::BadInput;
        }
    }
    report::print_summary_line(&report::summary(&result));
    report::status(&result)
}
