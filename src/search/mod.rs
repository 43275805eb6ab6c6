//! The small math on histograms and candidate lists: pure functions on small arrays, shared by
//! every engine. The CPU versions here are the reference the GPU is tested against.

pub mod candidates;
pub mod kl;
pub mod ln;
pub mod percentile;
