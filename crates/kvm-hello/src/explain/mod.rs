//! `kvm-hello --explain`: pictures of the live VM. What a run recorded (the memory layout, both
//! address spaces, the page tables, a walk, every exit) as text and as SVG for the book. Three
//! files: the recorded model (which `--step` shares for its exits), the text, the drawings.

mod model;
mod svg;
mod text;

pub use model::{ExitEvent, Explanation, Table, read_tables};
pub use svg::*;
pub use text::text;
