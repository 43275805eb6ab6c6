//! Reading calibration batches from files: `.npy` (one tensor, f32 or f16, C or Fortran order)
//! and `.safetensors` (named tensors of F32, F16 or BF16).
//!
//! A [`Batch`] holds the file's bytes, read into memory ([`read_batch`]) or memory-mapped
//! ([`map_batch`]), and gives the tensors as views of them: nothing is copied (except a tensor
//! whose data is not aligned for its element type, which a hand-made `.safetensors` file can
//! hold), so a batch takes about the size of its file, or less when mapped.
//!
//! ```no_run
//! use qcalib::io::{read_batch, Tensors};
//! use qcalib::{MinMaxObserver, Observer, QuantConfig};
//! let mut obs = MinMaxObserver::new(QuantConfig::default())?;
//! let batch = read_batch("activations.b0.npy".as_ref())?;
//! if let Tensors::Single(t) = batch.tensors()? {
//!     obs.observe_tensor(&t)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Only regular files are read: a directory, a device (`/dev/zero`, also behind a symbolic
//! link), a FIFO or a socket is refused at once, by what it is. Every other problem (a header
//! that claims more than the file holds, a malformed header, data of the wrong length, an
//! unsupported dtype, a `.safetensors` file without tensors) is an [`Error::Input`] naming the
//! file; nothing in a file can make the reader panic or allocate more than the file's size.

mod file;
mod npy_file;
mod npy_header;
mod safetensors_file;

use std::ops::Range;
use std::path::Path;

use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};

use self::file::Bytes;
use crate::error::{Error, Result};
pub use crate::tensor::OwnedTensor;
use crate::tensor::TensorView;

/// The file formats of calibration batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// numpy's `.npy`: one tensor.
    Npy,
    /// `.safetensors`: named tensors.
    Safetensors,
}

impl Format {
    /// The format of a file by its extension (`.npy`, `.safetensors`).
    ///
    /// ```
    /// use qcalib::io::Format;
    /// assert_eq!(Format::of("a/b0.npy".as_ref()), Some(Format::Npy));
    /// assert_eq!(Format::of("b0.txt".as_ref()), None);
    /// ```
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => Some(Format::Npy),
            Some("safetensors") => Some(Format::Safetensors),
            _ => None,
        }
    }
}

/// The element types of batch files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ElementType {
    F32,
    F16,
    BF16,
}

impl ElementType {
    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            ElementType::F32 => 4,
            ElementType::F16 | ElementType::BF16 => 2,
        }
    }

    /// The name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "f32",
            ElementType::F16 => "f16",
            ElementType::BF16 => "bf16",
        }
    }
}

/// Where a tensor lies in its file, and what it is.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) dtype: ElementType,
    pub(crate) shape: Vec<usize>,
    pub(crate) fortran_order: bool,
    /// The data's byte range in the file.
    pub(crate) data: Range<usize>,
}

impl Stored {
    /// The tensor as a view of `bytes`, or `None` when its data is not aligned for its element
    /// type (or does not fit its shape, which the parsers have already ruled out).
    fn view_in<'a>(&self, bytes: &'a [u8]) -> Option<TensorView<'a>> {
        fn typed<'a, T: bytemuck::Pod>(s: &Stored, data: &'a [u8]) -> Option<ArrayViewD<'a, T>> {
            let values: &[T] = bytemuck::try_cast_slice(data).ok()?;
            ArrayViewD::from_shape(s.ndarray_shape(), values).ok()
        }
        let data = bytes.get(self.data.clone())?;
        Some(match self.dtype {
            ElementType::F32 => TensorView::F32(typed::<f32>(self, data)?),
            ElementType::F16 => TensorView::F16(typed::<f16>(self, data)?),
            ElementType::BF16 => TensorView::BF16(typed::<bf16>(self, data)?),
        })
    }

    /// A copy of the tensor (for data that is not aligned in the file).
    fn copy_from(&self, bytes: &[u8]) -> std::result::Result<OwnedTensor, String> {
        fn typed<T: bytemuck::Pod>(s: &Stored, data: &[u8]) -> std::result::Result<ArrayD<T>, String> {
            let size = std::mem::size_of::<T>();
            let mut values: Vec<T> = Vec::new();
            values
                .try_reserve_exact(data.len() / size)
                .map_err(|_| format!("cannot allocate {} bytes to copy an unaligned tensor", data.len()))?;
            values.extend(data.chunks_exact(size).map(bytemuck::pod_read_unaligned::<T>));
            ArrayD::from_shape_vec(s.ndarray_shape(), values).map_err(|e| e.to_string())
        }
        let data = bytes.get(self.data.clone()).ok_or("the data lies outside the file")?;
        Ok(match self.dtype {
            ElementType::F32 => OwnedTensor::F32(typed(self, data)?),
            ElementType::F16 => OwnedTensor::F16(typed(self, data)?),
            ElementType::BF16 => OwnedTensor::BF16(typed(self, data)?),
        })
    }

    fn ndarray_shape(&self) -> ndarray::Shape<IxDyn> {
        if self.fortran_order { IxDyn(&self.shape).f() } else { IxDyn(&self.shape).into_shape_with_order() }
    }
}

/// A tensor of a batch: in place in the file's bytes, or copied when its data is not aligned.
#[derive(Debug)]
struct Placed {
    stored: Stored,
    copy: Option<OwnedTensor>,
}

impl Placed {
    /// Checks that the tensor can be viewed in `bytes`, and copies it if it cannot.
    fn new(stored: Stored, bytes: &[u8]) -> std::result::Result<Placed, String> {
        let copy = match stored.view_in(bytes) {
            Some(_) => None,
            None => Some(stored.copy_from(bytes)?),
        };
        Ok(Placed { stored, copy })
    }
}

#[derive(Debug)]
enum Contents {
    Single(Placed),
    Named(Vec<(String, Placed)>),
}

/// One calibration batch: the bytes of a `.npy` or `.safetensors` file and its tensors, checked.
/// [`Batch::tensors`] gives them as views.
#[derive(Debug)]
pub struct Batch {
    path: String,
    bytes: Bytes,
    contents: Contents,
}

/// The tensors of a [`Batch`], as views of its bytes.
#[derive(Clone, Debug)]
pub enum Tensors<'a> {
    /// A `.npy` file: one tensor.
    Single(TensorView<'a>),
    /// A `.safetensors` file: tensors by name, in name order.
    Named(Vec<(&'a str, TensorView<'a>)>),
}

impl Batch {
    /// Checks `bytes` as a file of `format` (the same checks as reading a file; errors name the
    /// file `(bytes)`).
    ///
    /// ```
    /// use qcalib::io::{Batch, Format, Tensors};
    /// let mut npy = b"\x93NUMPY\x01\x00\x3c\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }".to_vec();
    /// npy.resize(10 + 0x3c, b' ');
    /// npy.extend(1.5f32.to_le_bytes().iter().chain(&(-2.0f32).to_le_bytes()));
    /// let batch = Batch::from_bytes(npy, Format::Npy)?;
    /// let Tensors::Single(t) = batch.tensors()? else { unreachable!() };
    /// assert_eq!((t.shape(), t.dtype_name()), (&[2][..], "f32"));
    /// # Ok::<(), qcalib::Error>(())
    /// ```
    pub fn from_bytes(bytes: Vec<u8>, format: Format) -> Result<Batch> {
        Batch::new("(bytes)".into(), Bytes::Read(bytes), format)
    }

    fn new(path: String, bytes: Bytes, format: Format) -> Result<Batch> {
        let data = bytes.as_slice();
        let contents = match format {
            Format::Npy => npy_file::parse(data).and_then(|s| Placed::new(s, data)).map(Contents::Single),
            Format::Safetensors => safetensors_file::parse(data).and_then(|tensors| {
                tensors
                    .into_iter()
                    .map(|(name, s)| Placed::new(s, data).map(|p| (name, p)))
                    .collect::<std::result::Result<Vec<_>, String>>()
                    .map(Contents::Named)
            }),
        };
        match contents {
            Ok(contents) => Ok(Batch { path, bytes, contents }),
            Err(reason) => Err(Error::Input { path, reason }),
        }
    }

    /// The file the batch was read from (`(bytes)` for [`Batch::from_bytes`]).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the file is memory-mapped ([`map_batch`]) rather than read into memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Bytes::Mapped(_))
    }

    /// The tensors, as views of the batch's bytes. (The error is for an inconsistency inside
    /// qcalib: every tensor was checked when the batch was read.)
    pub fn tensors(&self) -> Result<Tensors<'_>> {
        Ok(match &self.contents {
            Contents::Single(p) => Tensors::Single(self.view(p)?),
            Contents::Named(named) => {
                Tensors::Named(named.iter().map(|(n, p)| Ok((n.as_str(), self.view(p)?))).collect::<Result<_>>()?)
            }
        })
    }

    fn view<'a>(&'a self, p: &'a Placed) -> Result<TensorView<'a>> {
        match &p.copy {
            Some(t) => Ok(t.view()),
            None => p.stored.view_in(self.bytes.as_slice()).ok_or_else(|| Error::Input {
                path: self.path.clone(),
                reason: "internal error in qcalib: a checked tensor cannot be viewed".into(),
            }),
        }
    }
}

/// The format of `path`, or an error naming it.
fn format_of(path: &Path) -> Result<Format> {
    Format::of(path).ok_or_else(|| Error::Input {
        path: path.display().to_string(),
        reason: "not a .npy or .safetensors file".into(),
    })
}

/// Reads one batch into memory; the file's extension (`.npy`, `.safetensors`) says which
/// format. Every problem (not a regular file, unreadable, truncated, malformed, an unsupported
/// dtype, no tensors) is an [`Error::Input`] naming the file.
pub fn read_batch(path: &Path) -> Result<Batch> {
    let format = format_of(path)?;
    let at = |reason| Error::Input { path: path.display().to_string(), reason };
    let bytes = file::read(path).map_err(at)?;
    Batch::new(path.display().to_string(), bytes, format)
}

/// Memory-maps one batch: [`read_batch`] without reading the file into memory. The pages are
/// the page cache's: a batch takes no memory of its own beyond what the observers touch, and
/// the kernel reads the file as the observers go.
///
/// # Safety
///
/// The file must not be modified or truncated while the [`Batch`] lives, by this process or
/// any other. The tensors are views of the file's pages: a write shows through them (and can
/// change values after they were checked), and a read past the end of a file truncated under
/// the map raises `SIGBUS`, which ends the process. This is the contract of every
/// memory-mapped tensor reader ([`memmap2::Mmap::map`], the `safetensors` crate's documented use
/// over a map, candle's `MmapedSafetensors`, Python's `safetensors.safe_open`); advisory locks
/// cannot enforce it. Use [`read_batch`] when the files may change during the run.
pub unsafe fn map_batch(path: &Path) -> Result<Batch> {
    let format = format_of(path)?;
    let at = |reason| Error::Input { path: path.display().to_string(), reason };
    // SAFETY: passed on to the caller (see above).
    let bytes = unsafe { file::map(path) }.map_err(at)?;
    Batch::new(path.display().to_string(), bytes, format)
}

/// Reads a `.npy` file: one tensor, copied into an array of its own.
pub fn read_npy_file(path: &Path) -> Result<OwnedTensor> {
    let at = |reason| Error::Input { path: path.display().to_string(), reason };
    let bytes = file::read(path).map_err(at)?;
    match Batch::new(path.display().to_string(), bytes, Format::Npy)?.tensors()? {
        Tensors::Single(t) => Ok(t.to_owned()),
        Tensors::Named(_) => Err(at("not a .npy file".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8], version: u8) -> Vec<u8> {
        let mut bytes = vec![0x93, b'N', b'U', b'M', b'P', b'Y', version, 0];
        match version {
            1 => bytes.extend((header.len() as u16).to_le_bytes()),
            _ => bytes.extend((header.len() as u32).to_le_bytes()),
        }
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn reads_every_version_and_order() {
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for version in [1, 2, 3] {
            for (order, expected) in
                [("False", [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), ("True", [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]])]
            {
                let h = format!("{{'descr': '<f4', 'fortran_order': {order}, 'shape': (2, 3), }}\n");
                let batch = Batch::from_bytes(npy(&h, &data, version), Format::Npy).unwrap();
                let Tensors::Single(TensorView::F32(v)) = batch.tensors().unwrap() else { panic!("an f32 tensor") };
                assert_eq!(v, ndarray::arr2(&expected).into_dyn());
            }
        }
    }

    #[test]
    fn refuses_bad_versions_and_lengths() {
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
        let err = |bytes: Vec<u8>| Batch::from_bytes(bytes, Format::Npy).unwrap_err().to_string();
        let mut v = npy(h, &f32_bytes(&[1.0]), 1);
        v[7] = 1;
        assert!(err(v).contains("version 1.1"), "minor versions other than 0");
        assert!(err(npy(h, &f32_bytes(&[1.0]), 4)).contains("version 4.0"));
        let mut v = npy(h, &[], 2);
        v[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err(v).contains("claims 4294967295 bytes"));
        assert!(err(npy(h, &f32_bytes(&[1.0, 2.0]), 1)).contains("holds 8 bytes"));
        assert!(err(npy(h, &[0, 0], 1)).contains("truncated"));
        let mut v = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\u{e9}", &[0; 4], 3);
        assert!(err(v.clone()).contains("after the closing"));
        let at = v.iter().position(|&b| b == 0xc3).unwrap();
        v[at] = 0xff;
        assert!(err(v).contains("not UTF-8"));
    }

    #[test]
    fn copies_unaligned_data() {
        // A header of 59 bytes puts the data at byte 69: not a multiple of 4.
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }  ";
        assert_eq!((10 + h.len()) % 4, 1);
        let batch = Batch::from_bytes(npy(h, &f32_bytes(&[0.5, -1.0, 2.0]), 1), Format::Npy).unwrap();
        let Tensors::Single(TensorView::F32(v)) = batch.tensors().unwrap() else { panic!("an f32 tensor") };
        assert_eq!(v.as_slice().unwrap(), &[0.5, -1.0, 2.0]);
    }

    #[test]
    fn safetensors_without_tensors_or_with_a_long_header() {
        let err = |bytes: Vec<u8>| Batch::from_bytes(bytes, Format::Safetensors).unwrap_err().to_string();
        let mut empty = 2u64.to_le_bytes().to_vec();
        empty.extend(b"{}");
        assert!(err(empty).contains("no tensors"));
        let mut long = u64::MAX.to_le_bytes().to_vec();
        long.extend(b"{}");
        assert!(err(long).contains("claims 18446744073709551615 bytes"));
        assert!(err(vec![1, 0, 0]).contains("truncated"));
    }
}
