//! Runs a program jailed, the way the grader will: `cargo run -p kit-jail --example jail-run --
//! [--kvm] [--ro PATH]... [--scratch DIR] PROGRAM [ARGS...]`; exits with the program's status.

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let jail = kit_jail::Jail::detect().unwrap_or_else(|err| {
        eprintln!("jail-run: {err}");
        std::process::exit(2);
    });
    let (mut kvm, mut read_only, mut scratch) = (false, Vec::new(), None);
    while let Some(flag) = args.next_if(|arg| arg.starts_with("--")) {
        match flag.as_str() {
            "--kvm" => kvm = true,
            "--ro" => read_only.push(args.next().expect("--ro PATH")),
            "--scratch" => scratch = args.next(),
            other => panic!("unknown option {other}"),
        }
    }
    let program = args.next().expect("a PROGRAM to run");
    let mut builder = jail.command(program).args(args).kvm(kvm);
    for path in read_only {
        builder = builder.read_only(path);
    }
    if let Some(dir) = scratch {
        builder = builder.scratch(dir);
    }
    let mut command = builder.build().unwrap_or_else(|err| {
        eprintln!("jail-run: {err}");
        std::process::exit(2);
    });
    let status = command.status().expect("run bwrap");
    std::process::exit(status.code().unwrap_or(1));
}
