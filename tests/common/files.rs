//! Files for the tests that run the CLI or read batches: scratch folders and `.npy` files
//! written byte by byte (version 1.0, little-endian, C order, the header padded as numpy pads it).

use std::path::{Path, PathBuf};

/// An empty folder for test `test` of suite `suite`, unique to this process (emptied first).
pub fn scratch(suite: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qcalib-{suite}-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A shape as numpy writes it in a header: `(3,)`, `(2, 3)`, `()`.
pub fn shape_text(dims: &[usize]) -> String {
    match dims {
        [d] => format!("({d},)"),
        _ => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

/// The header of a `.npy` file: the dictionary with `descr` and `shape` (as text, e.g. `(4,)`),
/// padded with spaces and a newline so that the data starts at a multiple of 64 bytes.
pub fn npy_header(descr: &str, shape: &str) -> String {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    header
}

/// A `.npy` file of version 1.0 with `header` (as it is: see [`npy_header`]) and `data`; the
/// length field says `header`'s length unless `header_len` says otherwise.
pub fn npy_with_header(header: &str, header_len: Option<u16>, data: &[u8]) -> Vec<u8> {
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend(header_len.unwrap_or(header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

/// A `.npy` file of `descr` values of shape `shape` (as text, e.g. `(4,)`) holding `data`.
pub fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    npy_with_header(&npy_header(descr, shape), None, data)
}

/// `values` as little-endian bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `values` as an f32 `.npy` file of shape `dims`.
pub fn write_npy_f32(path: &Path, dims: &[usize], values: &[f32]) {
    std::fs::write(path, npy_bytes("<f4", &shape_text(dims), &f32_bytes(values))).unwrap();
}
