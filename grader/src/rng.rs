//! The seeded randomness of the checks: every input a check hands to lab code comes from here, so
//! a run is repeated exactly with `--seed` (as proptest and quickcheck print a failing seed).

/// SplitMix64: small, fast and good enough to vary test inputs; not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for one check: the run's seed mixed with the check's name, so each check gets
    /// its own inputs and one check can be rerun alone with the same ones.
    pub fn for_check(seed: u64, check: &str) -> Rng {
        let name = check.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Rng(seed ^ name)
    }

    /// A generator seeded with `seed` as is.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..high` (`high` > `low`).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    /// One element of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64) as usize]
    }

    /// `items` in a random order (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// Printable ASCII text of `low..high` bytes.
    pub fn text_between(&mut self, low: u64, high: u64) -> Vec<u8> {
        let len = self.range(low, high) as usize;
        self.text(len)
    }

    /// Printable ASCII text of `len` bytes (no NUL, no newline), as a guest might print.
    pub fn text(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.range(0x20, 0x7f) as u8).collect()
    }
}

/// A seed that differs from run to run: the clock mixed with the process id.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    Rng::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64() % 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers_and_checks_differ() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::for_check(7, "lab2_x");
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::for_check(7, "lab2_x");
                move |_| r.next_u64()
            })
            .collect();
        let c = Rng::for_check(7, "lab2_y").next_u64();
        assert_eq!(a, b);
        assert_ne!(a[0], c);
        let mut r = Rng::new(1);
        assert!((0..1000).all(|_| (5..9).contains(&r.range(5, 9))));
    }
}
