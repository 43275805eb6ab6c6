//! Two statistics from one pass over the data.

use super::walk::Reducer;

/// Values handed to both reducers at a time: small enough to stay in L1 between the two.
const BLOCK: usize = 4096;

/// Feeds every block of values to two reducers in turn, so the data is read from memory once.
pub(crate) struct Both<A, B>(pub A, pub B);

impl<A: Reducer, B: Reducer> Reducer for Both<A, B> {
    type Part = (A::Part, B::Part);

    fn part(&self, first: usize, count: usize) -> Self::Part {
        (self.0.part(first, count), self.1.part(first, count))
    }

    fn part_bytes(&self, count: usize) -> usize {
        self.0.part_bytes(count) + self.1.part_bytes(count)
    }

    fn run(&self, part: &mut Self::Part, c: usize, x: &[f32]) {
        for block in x.chunks(BLOCK) {
            self.0.run(&mut part.0, c, block);
            self.1.run(&mut part.1, c, block);
        }
    }

    fn rows(&self, part: &mut Self::Part, rows: &[f32], channels: usize) {
        let per_block = (BLOCK / channels).max(1) * channels;
        for block in rows.chunks(per_block) {
            self.0.rows(&mut part.0, block, channels);
            self.1.rows(&mut part.1, block, channels);
        }
    }

    fn merge(&self, part: &mut Self::Part, other: Self::Part) {
        self.0.merge(&mut part.0, other.0);
        self.1.merge(&mut part.1, other.1);
    }

    fn concat(&self, parts: Vec<Self::Part>) -> Self::Part {
        let (a, b): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        (self.0.concat(a), self.1.concat(b))
    }
}
