//! Device placement for the op checks: every view sits inside a larger buffer whose other
//! elements hold a sentinel (guards), and outputs start poisoned (NaN).

use crate::backend::Backend;
use anyhow::Result;

/// Sentinel of the guard elements around every view.
pub(super) const GUARD: f32 = -1.234_567e30;
/// Elements after each view.
pub(super) const TAIL: usize = 3;

/// `len` elements at offset `off` of a buffer of `off + len + TAIL`, the rest holding `GUARD`.
pub(super) struct Placed<B: Backend<Elem = f32>> {
    pub(super) buf: B::Buf,
    off: usize,
    len: usize,
}

impl<B: Backend<Elem = f32>> Placed<B> {
    pub(super) fn new(be: &B, data: &[f32], off: usize) -> Result<Self> {
        let mut host = vec![GUARD; off + data.len() + TAIL];
        host[off..off + data.len()].copy_from_slice(data);
        let mut buf = be.alloc(host.len())?;
        be.upload(&host, &mut buf)?;
        Ok(Placed { buf, off, len: data.len() })
    }
    /// An output: NaN everywhere in the view.
    pub(super) fn poisoned(be: &B, len: usize, off: usize) -> Result<Self> {
        Self::new(be, &poison(len), off)
    }
    pub(super) fn v<'a>(&'a self, be: &'a B) -> B::View<'a> {
        be.view(&self.buf, self.off..self.off + self.len)
    }
    pub(super) fn m<'a>(&'a mut self, be: &'a B) -> B::ViewMut<'a> {
        be.view_mut(&mut self.buf, self.off..self.off + self.len)
    }
    /// The view's contents and whether every guard is intact.
    pub(super) fn read(&self, be: &B) -> Result<(Vec<f32>, bool)> {
        let mut host = vec![0f32; be.len(&self.buf)];
        be.download(&self.buf, &mut host)?;
        let guards_ok = host[..self.off]
            .iter()
            .chain(&host[self.off + self.len..])
            .all(|g| g.to_bits() == GUARD.to_bits());
        Ok((host[self.off..self.off + self.len].to_vec(), guards_ok))
    }
}

/// The contents of a poisoned output: NaN, so that an element the op fails to write shows.
pub(super) fn poison(len: usize) -> Vec<f32> {
    vec![f32::NAN; len]
}

/// A one-input op on the backend: places `x`, then the output with the contents `out`, at `off`;
/// runs `op` on their views; returns the output and whether its guards are intact.
pub(super) fn one_input<B: Backend<Elem = f32>>(
    be: &B,
    off: usize,
    x: &[f32],
    out: &[f32],
    op: impl FnOnce(B::View<'_>, B::ViewMut<'_>),
) -> Result<(Vec<f32>, bool)> {
    let px = Placed::new(be, x, off)?;
    let mut py = Placed::new(be, out, off)?;
    op(px.v(be), py.m(be));
    py.read(be)
}

/// View offsets: 4 elements (16-byte aligned: vector paths) and 1 (misaligned: scalar paths).
pub(super) const ALIGNED: usize = 4;
pub(super) const ODD: usize = 1;

pub(super) fn off_tag(off: usize) -> &'static str {
    if off % 4 == 0 {
        "a16"
    } else {
        "odd"
    }
}

#[cfg(test)]
mod tests {
    use super::super::compare::{compare, wide, Tol};
    use super::*;
    use crate::backend::cpu::Cpu;

    #[test]
    fn guards_catch_stray_writes_and_poison_catches_unwritten_elements() {
        let be = Cpu::<f32>::new();
        let mut p = Placed::<Cpu<f32>>::new(&be, &[1.0, 2.0, 3.0], ODD).unwrap();
        assert!(p.read(&be).unwrap().1);
        p.buf[0] = 0.0; // before the view
        assert!(!p.read(&be).unwrap().1);
        let mut q = Placed::<Cpu<f32>>::poisoned(&be, 4, ALIGNED).unwrap();
        let v = q.m(&be);
        v[..3].copy_from_slice(&[1.0, 2.0, 3.0]); // the op "forgets" the last element
        let (got, guards_ok) = q.read(&be).unwrap();
        assert!(guards_ok);
        let s = compare(&wide(&got), &[1.0, 2.0, 3.0, 4.0], &Tol::Rel { rel: 1.0, abs: 1.0 });
        assert!(s.worst.is_infinite() && s.bad.map(|b| b.0) == Some(3), "{s:?}");
        q.buf[ALIGNED + 4] = 0.0; // just past the view
        assert!(!q.read(&be).unwrap().1);
    }
}
