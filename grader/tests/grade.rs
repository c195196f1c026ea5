//! `cargo test -p grader`: every check of the grader as a test. The suite runs once (each request
//! in a fresh probe process, in lab order, blocked checks not run) and each test reports its check.

#![cfg(feature = "probe")]

use std::sync::OnceLock;

use grader::HostNeed;
use grader::host::Host;
use grader::runner::{Outcome, ProbeProgram, Suite, run_suite};

/// The run's seed: `GRADER_SEED` repeats a run, otherwise a fresh one (printed on failure).
fn suite() -> &'static Suite {
    static SUITE: OnceLock<Suite> = OnceLock::new();
    SUITE.get_or_init(|| {
        let seed = std::env::var("GRADER_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(grader::rng::fresh_seed);
        let mut probe = ProbeProgram::unjailed(env!("CARGO_BIN_EXE_grader-probe"));
        run_suite(&mut probe, seed, |_| true)
    })
}

fn grade(name: &str) {
    let suite = suite();
    let result = suite
        .results
        .iter()
        .find(|r| r.check.name == name)
        .unwrap_or_else(|| panic!("no check named {name}"));
    match &result.outcome {
        Outcome::Passed => {}
        // What a PVM host can check of paged32: kvm-hello refuses it with the line that says why.
        Outcome::NotRun(_) if result.check.host == HostNeed::Paged32 && Host::probe().pvm => paged32_explained(),
        other => panic!("{} (GRADER_SEED={} repeats this run)", other.message(), suite.seed),
    }
}

fn paged32_explained() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grader-probe"))
        .args(["vmm", "--mode", "paged32"])
        .output()
        .expect("the probe runs as kvm-hello");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("PVM") && stderr.contains("paging only in long mode"),
        "{stderr}"
    );
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                grade(stringify!($name));
            }
        )*

        /// The list above and the grader's checks are the same.
        #[test]
        fn every_check_is_a_test() {
            let tests = [$(stringify!($name)),*];
            let checks: Vec<&str> = grader::all_checks().iter().map(|c| c.name).collect();
            assert_eq!(tests.as_slice(), checks.as_slice(), "grader/tests/grade.rs must list every check, in order");
        }
    };
}

checks!(
    lab1_vm_init_memory,
    lab1_memory_seen_by_vcpu,
    lab1_vcpu_init,
    lab1_kvm_run_mapping,
    lab1_guest_memory_host_address,
    lab1_load_image,
    lab2_long_mode_cr3,
    lab2_pml4_entry,
    lab2_pdpt_entry,
    lab2_pd_entry,
    lab2_nothing_else_mapped,
    lab2_paged32_directory,
    lab2_translate_identity,
    lab2_translate_faults,
    lab2_translate_other_pages,
    lab2_translate_hidden_cr3_flags,
    lab2_translate_hidden_many_addresses,
    lab3_flat_segment,
    lab3_long_mode_control_registers,
    lab3_long_mode_code_segment,
    lab3_data_segments,
    lab3_protected_mode,
    lab3_paged32_mode,
    lab3_real_mode,
    lab3_general_registers,
    lab3_guest_runs_in_each_mode,
    lab3_guest_runs_in_paged32,
    lab4_console_output,
    lab4_hlt_ends_the_loop,
    lab4_unexpected_exits,
    lab4_result_slot,
    lab4_check_results,
    lab4_hello_long_mode,
    lab4_hello_real_mode,
    lab4_string_io,
    lab4_stops_at_hlt,
    lab4_unexpected_exit_ends_the_run,
    lab4_wrong_results_are_caught,
    lab4_trace_every_exit,
    lab4_kvm_run_errors,
    e2e_long_mode,
    e2e_protected_mode,
    e2e_real_mode,
    e2e_paged32_mode,
    e2e_json_report,
    lab0_create_vm,
    lab0_setup_vcpu,
    lab0_memory_slot,
    lab0_run,
    e2e_lab_lwn,
    lab5_print32bit,
    lab5_num_exits,
    lab5_write_exit_report,
    lab5_read_guest_string,
    lab5_gva_to_hva,
    lab5_gva_to_hva_hypercall,
    lab5_gva_to_hva_outside_memory,
    lab5_hypercall_guest,
    lab5_print_str_in_one_exit,
    lab5_gva_to_hva_live,
    e2e_lab_hypercalls,
    lab5_hypercall_guest_hidden_many_calls,
    lab6_next_slice_turns,
    lab6_next_slice_weighted,
    lab6_both_progress,
    lab6_cooperative_alternates,
    lab6_round_robin_quantum,
    lab6_weighted_shares,
    lab6_state_survives_switches,
    lab6_ends_at_duration,
    lab7_snapshot_round_trip,
    lab7_dirty_log,
    lab7_move_fast_writer,
    lab7_rounds_converge,
);
