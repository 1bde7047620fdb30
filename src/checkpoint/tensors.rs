//! Little-endian encoding of flat host arrays as safetensors tensors, and checked decoding.

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::BTreeMap;

/// Element precision of floating-point tensors in a checkpoint (that of the backend that wrote it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    /// The precision of an element type of `bytes` bytes (4: f32, 8: f64).
    pub fn of_size(bytes: usize) -> Result<Self> {
        match bytes {
            4 => Ok(Self::F32),
            8 => Ok(Self::F64),
            n => bail!("checkpoints store f32 or f64 weights; this backend computes in {n}-byte elements"),
        }
    }

    fn dtype(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::F64 => Dtype::F64,
        }
    }
}

/// Named tensors being assembled for one safetensors file (owned bytes).
#[derive(Default)]
pub struct TensorWriter {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
}

impl TensorWriter {
    /// Floats, stored exactly in `p` (values must be representable, as they are when they came
    /// from a backend of that precision).
    pub fn floats(&mut self, name: &str, p: Precision, shape: Vec<usize>, v: &[f64]) {
        let bytes = match p {
            Precision::F32 => v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
            Precision::F64 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        self.push(name, p.dtype(), shape, bytes);
    }

    pub fn f64s(&mut self, name: &str, shape: Vec<usize>, v: &[f64]) {
        self.floats(name, Precision::F64, shape, v)
    }

    pub fn u64s(&mut self, name: &str, shape: Vec<usize>, v: &[u64]) {
        self.push(name, Dtype::U64, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect());
    }

    pub fn i64s(&mut self, name: &str, shape: Vec<usize>, v: &[i64]) {
        self.push(name, Dtype::I64, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect());
    }

    pub fn u8s(&mut self, name: &str, shape: Vec<usize>, v: &[u8]) {
        self.push(name, Dtype::U8, shape, v.to_vec());
    }

    fn push(&mut self, name: &str, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) {
        debug_assert_eq!(bytes.len(), shape.iter().product::<usize>() * dtype.size(), "{name}");
        self.tensors.push((name.to_string(), dtype, shape, bytes));
    }

    /// The safetensors file, with `metadata` in its header in sorted key order, so that the same
    /// tensors and metadata always give the same bytes (the crate writes a HashMap, in an order that
    /// changes from process to process).
    ///
    /// Layout: n: u64 LE | header: n bytes of JSON, space-padded to a multiple of 8 | tensor data.
    /// The crate writes the tensors (and their offsets, relative to the data) with no metadata; the
    /// metadata object is then put first in the header, where the crate would put it.
    pub fn serialize(&self, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        let views = self
            .tensors
            .iter()
            .map(|(n, d, s, b)| Ok((n.as_str(), TensorView::new(*d, s.clone(), b)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
            .context("assembling tensors")?;
        let plain = safetensors::serialize(views, &None).context("serializing safetensors")?;
        let n = u64::from_le_bytes(plain[..8].try_into().expect("8 bytes")) as usize;
        let tensors_json = std::str::from_utf8(&plain[8..8 + n]).context("safetensors header")?.trim_end();
        let rest = tensors_json.strip_prefix('{').context("safetensors header is not a JSON object")?;
        let meta = serde_json::to_string(metadata).context("serializing the metadata")?;
        let sep = if rest == "}" { "" } else { "," };
        let mut header = format!("{{\"__metadata__\":{meta}{sep}{rest}").into_bytes();
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut out = Vec::with_capacity(8 + header.len() + plain.len() - 8 - n);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&plain[8 + n..]);
        Ok(out)
    }
}

/// Checked reads from a parsed safetensors file: each names the tensor it could not read.
pub struct TensorReader<'a> {
    st: SafeTensors<'a>,
    what: &'a str,
}

impl<'a> TensorReader<'a> {
    pub fn new(bytes: &'a [u8], what: &'a str) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow::anyhow!("{what}: not a safetensors file: {e:?}"))?;
        Ok(Self { st, what })
    }

    fn raw(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&'a [u8]> {
        let t = self.st.tensor(name).map_err(|_| anyhow::anyhow!("{}: no tensor {name:?}", self.what))?;
        if t.dtype() != dtype || t.shape() != shape {
            bail!(
                "{}: tensor {name:?} is {:?} {:?}, expected {dtype:?} {shape:?}",
                self.what,
                t.dtype(),
                t.shape()
            );
        }
        Ok(t.data())
    }

    /// The leading dimension of tensor `name` (for variable-length arrays).
    pub fn rows(&self, name: &str) -> Result<usize> {
        let t = self.st.tensor(name).map_err(|_| anyhow::anyhow!("{}: no tensor {name:?}", self.what))?;
        t.shape()
            .first()
            .copied()
            .ok_or_else(|| anyhow::anyhow!("{}: tensor {name:?} is a scalar", self.what))
    }

    pub fn floats(&self, name: &str, p: Precision, shape: &[usize]) -> Result<Vec<f64>> {
        let raw = self.raw(name, p.dtype(), shape)?;
        Ok(match p {
            Precision::F32 => {
                raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
            }
            Precision::F64 => {
                raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
            }
        })
    }

    pub fn f64s(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        self.floats(name, Precision::F64, shape)
    }

    pub fn u64s(&self, name: &str, shape: &[usize]) -> Result<Vec<u64>> {
        self.words(name, Dtype::U64, shape, u64::from_le_bytes)
    }

    pub fn i64s(&self, name: &str, shape: &[usize]) -> Result<Vec<i64>> {
        self.words(name, Dtype::I64, shape, i64::from_le_bytes)
    }

    /// A tensor of 8-byte little-endian words, each decoded by `from`.
    fn words<T>(&self, name: &str, dtype: Dtype, shape: &[usize], from: fn([u8; 8]) -> T) -> Result<Vec<T>> {
        let bytes = self.raw(name, dtype, shape)?;
        Ok(bytes.chunks_exact(8).map(|c| from(c.try_into().expect("8-byte chunks"))).collect())
    }

    pub fn u8s(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        Ok(self.raw(name, Dtype::U8, shape)?.to_vec())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    pub fn names(&self) -> Vec<String> {
        self.st.names().into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly_including_nan_and_empty_tensors() {
        let mut w = TensorWriter::default();
        let vals = [1.0f64 / 3.0, f64::NAN, f64::INFINITY, -0.0, 1e-310];
        w.f64s("a", vec![5], &vals);
        w.floats("b", Precision::F32, vec![2], &[0.1f32 as f64, -2.5]);
        w.u64s("c", vec![0, 3], &[]);
        w.i64s("d", vec![], &[7]);
        let meta =
            BTreeMap::from([("z".to_string(), "last".to_string()), ("a".to_string(), "1".to_string())]);
        let bytes = w.serialize(&meta).unwrap();
        let r = TensorReader::new(&bytes, "test").unwrap();
        let a = r.f64s("a", &[5]).unwrap();
        assert!(a.iter().zip(&vals).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_eq!(r.floats("b", Precision::F32, &[2]).unwrap(), vec![0.1f32 as f64, -2.5]);
        assert_eq!(r.u64s("c", &[0, 3]).unwrap(), Vec::<u64>::new());
        assert_eq!(r.i64s("d", &[]).unwrap(), vec![7]);
        assert!(r.f64s("a", &[4]).unwrap_err().to_string().contains("\"a\""));
        assert!(r.u8s("zz", &[1]).unwrap_err().to_string().contains("no tensor"));
        let (_, read_meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let read_meta = read_meta.metadata().clone().unwrap();
        assert_eq!(read_meta.into_iter().collect::<BTreeMap<_, _>>(), meta, "metadata survives the splice");
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
        assert!(
            header.starts_with(r#"{"__metadata__":{"a":"1","z":"last"},"#),
            "sorted keys first: {header}"
        );
        assert_eq!(header_len % 8, 0);
        let empty = TensorWriter::default().serialize(&meta).unwrap();
        assert!(SafeTensors::deserialize(&empty).unwrap().names().is_empty(), "no tensors is valid too");
    }
}
