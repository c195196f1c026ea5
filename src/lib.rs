//! The KVM lab kit's root package: it only carries the kit-level tests in `tests/`.
