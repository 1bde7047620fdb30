//! CIFAR-10 / CIFAR-100 binary-format loaders.
//!
//! CIFAR-10 record: 1 label byte (0..10) then 3072 pixel bytes: 1024 R, 1024 G, 1024 B, each plane
//! row-major 32×32. Files: data_batch_1.bin … data_batch_5.bin (train), test_batch.bin.
//! CIFAR-100 record: coarse label byte (0..20), fine label byte (0..100), then the same 3072 pixels.
//! Files: train.bin, test.bin. Official files hold 10,000 (CIFAR-100 train: 50,000) records; any whole
//! number ≥ 1 is accepted. The pixel layout is exactly [`Dataset`]'s CHW layout, so records are copied.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use super::error::{DataError, CIFAR100_HINT, CIFAR10_HINT};

/// Image side in pixels.
pub const CIFAR_SIDE: usize = 32;
/// Pixel bytes per record: 3·32·32.
pub const CIFAR_PIXELS: usize = 3 * CIFAR_SIDE * CIFAR_SIDE;
/// Subdirectory the official CIFAR-10 tarball extracts to.
pub const CIFAR10_SUBDIR: &str = "cifar-10-batches-bin";
/// Subdirectory the official CIFAR-100 tarball extracts to.
pub const CIFAR100_SUBDIR: &str = "cifar-100-binary";
/// CIFAR-10 training files, in load order.
pub const CIFAR10_TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
pub const CIFAR100_TRAIN_FILE: &str = "train.bin";
pub const CIFAR100_TEST_FILE: &str = "test.bin";

/// Which CIFAR-100 label to use as the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cifar100Labels {
    /// 100 fine classes (second label byte).
    #[default]
    Fine,
    /// 20 superclasses (first label byte).
    Coarse,
}

/// Record layout: the label bytes in order as (kind, number of classes), and which one is the class.
struct Format {
    labels: &'static [(&'static str, usize)],
    pick: usize,
}

impl Format {
    fn record_len(&self) -> usize {
        self.labels.len() + CIFAR_PIXELS
    }
}

const CIFAR10_FORMAT: Format = Format { labels: &[("CIFAR-10", 10)], pick: 0 };
const CIFAR100_LABELS: &[(&str, usize)] = &[("CIFAR-100 coarse", 20), ("CIFAR-100 fine", 100)];

/// Reads a whole file; a missing file becomes [`DataError::Missing`].
fn read(path: &Path, what: &'static str, hint: &'static str) -> Result<Vec<u8>, DataError> {
    fs::read(path).map_err(|error| match error.kind() {
        ErrorKind::NotFound => DataError::Missing { path: path.to_path_buf(), what, hint },
        _ => DataError::Io { path: path.to_path_buf(), error },
    })
}

/// Whether `path` exists; any error but "not found" (a symlink loop, no permission) is reported as
/// the OS gives it rather than taken for a missing file.
fn exists(path: &Path) -> Result<bool, DataError> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(error) => Err(DataError::Io { path: path.to_path_buf(), error }),
    }
}

/// Whether any of `paths` exists (see [`exists`]).
fn any_exists(paths: &[PathBuf]) -> Result<bool, DataError> {
    for p in paths {
        if exists(p)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `dir` is a directory that can be listed; otherwise what it is instead, or the OS error.
fn check_dir(dir: &Path) -> Result<(), DataError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Err(DataError::DirNotFound { dir: dir.to_path_buf() }),
        Err(error) => Err(DataError::Io { path: dir.to_path_buf(), error }),
        Ok(m) if !m.is_dir() => Err(DataError::NotADirectory { path: dir.to_path_buf() }),
        Ok(_) => {
            fs::read_dir(dir).map(drop).map_err(|error| DataError::Io { path: dir.to_path_buf(), error })
        }
    }
}

/// Validates `bytes` as whole records of `fmt` and appends pixels and picked labels.
fn parse_records(
    path: &Path,
    bytes: &[u8],
    fmt: &Format,
    images: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<(), DataError> {
    let rec = fmt.record_len();
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    if bytes.len() % rec != 0 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            len: bytes.len(),
            record: rec,
            whole: bytes.len() / rec,
            extra: bytes.len() % rec,
        });
    }
    let n = bytes.len() / rec;
    images.reserve(n * CIFAR_PIXELS);
    labels.reserve(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        for (k, &(kind, classes)) in fmt.labels.iter().enumerate() {
            if r[k] as usize >= classes {
                return Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    record: i,
                    kind,
                    value: r[k] as u32,
                    classes,
                });
            }
        }
        labels.push(r[fmt.pick] as u32);
        images.extend_from_slice(&r[fmt.labels.len()..]);
    }
    Ok(())
}

/// Loads the given files (in order) into one dataset.
fn load_files(
    files: &[PathBuf],
    fmt: &Format,
    what: &'static str,
    hint: &'static str,
    name: &str,
) -> Result<Dataset, DataError> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for path in files {
        let bytes = read(path, what, hint)?;
        parse_records(path, &bytes, fmt, &mut images, &mut labels)?;
    }
    Ok(Dataset {
        images,
        labels,
        channels: 3,
        height: CIFAR_SIDE,
        width: CIFAR_SIDE,
        classes: fmt.labels[fmt.pick].1,
        name: name.to_string(),
        files: files.to_vec(),
    })
}

/// `dir` if it holds any of `markers`, else `dir/subdir` if that does, else `dir`.
fn resolve(dir: &Path, subdir: &str, markers: &[&str]) -> Result<PathBuf, DataError> {
    check_dir(dir)?;
    let has = |d: &Path| any_exists(&markers.iter().map(|m| d.join(m)).collect::<Vec<_>>());
    let nested = dir.join(subdir);
    Ok(if !has(dir)? && has(&nested)? { nested } else { dir.to_path_buf() })
}

/// Loads CIFAR-10 (train, test) from `dir` or `dir/cifar-10-batches-bin/`.
///
/// test_batch.bin and data_batch_1.bin are required; data_batch_2..5.bin are loaded if present and must
/// be consecutive (a gap is an error). `train.files` lists the training files loaded; see
/// [`cifar10_train_note`].
pub fn load_cifar10(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let root = resolve(dir, CIFAR10_SUBDIR, &[CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES[0]])?;
    let test_path = root.join(CIFAR10_TEST_FILE);
    let first = root.join(CIFAR10_TRAIN_FILES[0]);
    for (path, what) in [
        (&test_path, "the CIFAR-10 test batch is required"),
        (&first, "the first CIFAR-10 training batch is required"),
    ] {
        if !exists(path)? {
            return Err(DataError::Missing { path: path.clone(), what, hint: CIFAR10_HINT });
        }
    }
    let mut train_files = vec![first];
    let mut missing: Option<PathBuf> = None;
    for name in &CIFAR10_TRAIN_FILES[1..] {
        let p = root.join(name);
        match (&missing, exists(&p)?) {
            (None, true) => train_files.push(p),
            (None, false) => missing = Some(p),
            (Some(m), true) => return Err(DataError::BatchGap { present: p, missing: m.clone() }),
            (Some(_), false) => {}
        }
    }
    let train =
        load_files(&train_files, &CIFAR10_FORMAT, "CIFAR-10 training batch", CIFAR10_HINT, "cifar10-train")?;
    let test =
        load_files(&[test_path], &CIFAR10_FORMAT, "CIFAR-10 test batch", CIFAR10_HINT, "cifar10-test")?;
    Ok((train, test))
}

/// "using 1 of 5 training batches (data_batch_1.bin)" when a CIFAR-10 training set was loaded from
/// fewer than all 5 files; `None` otherwise, and for any other dataset (CIFAR-100 has one file).
pub fn cifar10_train_note(train: &Dataset) -> Option<String> {
    let n = train.files.len();
    let is_cifar10 = train
        .files
        .iter()
        .all(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| CIFAR10_TRAIN_FILES.contains(&f)));
    if n == 0 || n >= CIFAR10_TRAIN_FILES.len() || !is_cifar10 {
        return None;
    }
    let names: Vec<String> = train
        .files
        .iter()
        .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
        .collect();
    Some(format!("using {n} of {} training batches ({})", CIFAR10_TRAIN_FILES.len(), names.join(", ")))
}

/// Loads CIFAR-100 (train, test) from `dir` or `dir/cifar-100-binary/`; both label bytes are checked,
/// `labels` picks the class (Fine: 100 classes, Coarse: 20).
pub fn load_cifar100(dir: &Path, labels: Cifar100Labels) -> Result<(Dataset, Dataset), DataError> {
    let root = resolve(dir, CIFAR100_SUBDIR, &[CIFAR100_TEST_FILE, CIFAR100_TRAIN_FILE])?;
    let (pick, suffix) = match labels {
        Cifar100Labels::Coarse => (0, "coarse"),
        Cifar100Labels::Fine => (1, ""),
    };
    let fmt = Format { labels: CIFAR100_LABELS, pick };
    let name = |split: &str| {
        if suffix.is_empty() {
            format!("cifar100-{split}")
        } else {
            format!("cifar100{suffix}-{split}")
        }
    };
    let test_path = root.join(CIFAR100_TEST_FILE);
    let train_path = root.join(CIFAR100_TRAIN_FILE);
    let test =
        load_files(&[test_path], &fmt, "the CIFAR-100 test set is required", CIFAR100_HINT, &name("test"))?;
    let train = load_files(
        &[train_path],
        &fmt,
        "the CIFAR-100 training set is required",
        CIFAR100_HINT,
        &name("train"),
    )?;
    Ok((train, test))
}

/// Loads CIFAR-10 if its files are in `dir` (or `dir/cifar-10-batches-bin/`), else CIFAR-100 with fine
/// labels if its files are in `dir` (or `dir/cifar-100-binary/`), else [`DataError::NoDataset`].
/// A `dir` that is missing, a file, or unreadable is said to be so.
pub fn detect_and_load(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    check_dir(dir)?;
    let c10 = [CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES[0]];
    let c100 = [CIFAR100_TEST_FILE, CIFAR100_TRAIN_FILE];
    let candidates = |sub: &str, files: &[&str]| -> Vec<PathBuf> {
        [dir.to_path_buf(), dir.join(sub)].iter().flat_map(|d| files.iter().map(move |f| d.join(f))).collect()
    };
    let c10_paths = candidates(CIFAR10_SUBDIR, &c10);
    let c100_paths = candidates(CIFAR100_SUBDIR, &c100);
    if any_exists(&c10_paths)? {
        load_cifar10(dir)
    } else if any_exists(&c100_paths)? {
        load_cifar100(dir, Cifar100Labels::Fine)
    } else {
        Err(DataError::NoDataset { dir: dir.to_path_buf(), looked_for: [c10_paths, c100_paths].concat() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixel p (0..3072) of record r: distinct per record and per plane position.
    fn pixel(r: usize, p: usize) -> u8 {
        ((p * 7 + r * 31 + p / 1024 * 101) % 256) as u8
    }

    fn records(label_bytes: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (r, lb) in label_bytes.iter().enumerate() {
            out.extend_from_slice(lb);
            out.extend((0..CIFAR_PIXELS).map(|p| pixel(r, p)));
        }
        out
    }

    fn c10_file(labels: &[u8]) -> Vec<u8> {
        let lb: Vec<[u8; 1]> = labels.iter().map(|&l| [l]).collect();
        records(&lb.iter().map(|l| &l[..]).collect::<Vec<_>>())
    }

    fn c100_file(labels: &[(u8, u8)]) -> Vec<u8> {
        let lb: Vec<[u8; 2]> = labels.iter().map(|&(c, f)| [c, f]).collect();
        records(&lb.iter().map(|l| &l[..]).collect::<Vec<_>>())
    }

    const L7: [u8; 7] = [3, 0, 9, 1, 5, 5, 7];

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        fs::write(dir.join(name), bytes).unwrap();
    }

    fn c10_dir(train_batches: &[usize]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "test_batch.bin", &c10_file(&[1, 2, 3]));
        for &b in train_batches {
            write(t.path(), &format!("data_batch_{b}.bin"), &c10_file(&L7));
        }
        t
    }

    fn msg(e: &DataError) -> String {
        e.to_string()
    }

    #[test]
    fn cifar10_round_trip() {
        let t = c10_dir(&[1]);
        let (train, test) = load_cifar10(t.path()).unwrap();
        assert_eq!(train.len(), 7);
        assert_eq!(test.len(), 3);
        assert_eq!(train.labels, L7.iter().map(|&l| l as u32).collect::<Vec<_>>());
        assert_eq!(test.labels, vec![1, 2, 3]);
        assert_eq!((train.channels, train.height, train.width, train.classes), (3, 32, 32, 10));
        for r in 0..7 {
            let img = train.image(r);
            // R plane first, then G, then B; row-major: pixel (y, x) of channel c at c*1024 + y*32 + x.
            assert_eq!(img.len(), CIFAR_PIXELS);
            for (p, &v) in img.iter().enumerate() {
                assert_eq!(v, pixel(r, p), "record {r} pixel {p}");
            }
        }
        assert_eq!(train.files, vec![t.path().join("data_batch_1.bin")]);
        assert_eq!(cifar10_train_note(&train).unwrap(), "using 1 of 5 training batches (data_batch_1.bin)");
    }

    #[test]
    fn cifar10_several_batches_in_order_and_subdir() {
        let t = tempfile::tempdir().unwrap();
        let sub = t.path().join(CIFAR10_SUBDIR);
        fs::create_dir(&sub).unwrap();
        write(&sub, "test_batch.bin", &c10_file(&[0]));
        write(&sub, "data_batch_1.bin", &c10_file(&[1, 1]));
        write(&sub, "data_batch_2.bin", &c10_file(&[2]));
        write(&sub, "data_batch_3.bin", &c10_file(&[3, 3, 3]));
        let (train, test) = load_cifar10(t.path()).unwrap();
        assert_eq!(train.labels, vec![1, 1, 2, 3, 3, 3]);
        assert_eq!(test.labels, vec![0]);
        assert_eq!(train.files.len(), 3);
        assert!(cifar10_train_note(&train).unwrap().starts_with("using 3 of 5"));
        // The second file's record 0 is the dataset's record 2.
        assert_eq!(train.image(2)[5], pixel(0, 5));
        for b in [4, 5] {
            write(&sub, &format!("data_batch_{b}.bin"), &c10_file(&[b as u8]));
        }
        let (train, _) = load_cifar10(&sub).unwrap();
        assert_eq!(train.labels, vec![1, 1, 2, 3, 3, 3, 4, 5]);
        assert_eq!(cifar10_train_note(&train), None);
    }

    #[test]
    fn cifar10_missing_files() {
        let t = c10_dir(&[1]);
        fs::remove_file(t.path().join("test_batch.bin")).unwrap();
        let e = load_cifar10(t.path()).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e:?}");
        assert!(msg(&e).contains("test_batch.bin") && msg(&e).contains("not found"), "{e}");

        let t = c10_dir(&[]);
        let e = load_cifar10(t.path()).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e:?}");
        assert!(msg(&e).contains("data_batch_1.bin"), "{e}");
        assert!(msg(&e).contains("cifar-10-binary.tar.gz"), "{e}");
    }

    #[test]
    fn cifar10_gap() {
        let t = c10_dir(&[1, 3]);
        let e = load_cifar10(t.path()).unwrap_err();
        assert!(matches!(e, DataError::BatchGap { .. }), "{e:?}");
        assert!(msg(&e).contains("data_batch_3.bin") && msg(&e).contains("data_batch_2.bin"), "{e}");
    }

    #[test]
    fn cifar10_truncated_extra_empty() {
        let t = c10_dir(&[1]);
        let mut bytes = c10_file(&L7);
        bytes.truncate(bytes.len() - 10);
        write(t.path(), "data_batch_1.bin", &bytes);
        let e = load_cifar10(t.path()).unwrap_err();
        assert!(matches!(e, DataError::Truncated { whole: 6, extra: 3063, .. }), "{e:?}");
        let m = msg(&e);
        assert!(m.contains("data_batch_1.bin"), "{m}");
        assert!(m.contains("truncated: 21501 bytes is not a whole number of 3073-byte records"), "{m}");
        assert!(m.contains("3063 extra bytes"), "{m}");

        write(t.path(), "data_batch_1.bin", &c10_file(&L7));
        let mut bytes = c10_file(&[1, 2]);
        bytes.extend_from_slice(&[0, 0, 0]);
        write(t.path(), "test_batch.bin", &bytes);
        let e = load_cifar10(t.path()).unwrap_err();
        assert!(matches!(e, DataError::Truncated { whole: 2, extra: 3, .. }), "{e:?}");
        assert!(msg(&e).contains("test_batch.bin") && msg(&e).contains("3 extra bytes"), "{e}");

        write(t.path(), "test_batch.bin", &[]);
        let e = load_cifar10(t.path()).unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
        assert!(msg(&e).contains("test_batch.bin") && msg(&e).contains("empty"), "{e}");

        // A short header-only file (fewer bytes than one record) is truncated, not a panic.
        write(t.path(), "test_batch.bin", &[1]);
        let e = load_cifar10(t.path()).unwrap_err();
        assert!(matches!(e, DataError::Truncated { whole: 0, extra: 1, .. }), "{e:?}");
    }

    #[test]
    fn cifar10_label_out_of_range() {
        let t = c10_dir(&[1]);
        write(t.path(), "data_batch_1.bin", &c10_file(&[0, 9, 10, 1]));
        let e = load_cifar10(t.path()).unwrap_err();
        assert!(matches!(e, DataError::LabelOutOfRange { record: 2, value: 10, classes: 10, .. }), "{e:?}");
        let m = msg(&e);
        assert!(m.contains("data_batch_1.bin") && m.contains("record 2") && m.contains("label 10"), "{m}");
    }

    fn c100_dir(train: &[(u8, u8)], test: &[(u8, u8)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "train.bin", &c100_file(train));
        write(t.path(), "test.bin", &c100_file(test));
        t
    }

    #[test]
    fn cifar100_round_trip_fine_and_coarse() {
        let tr = [(0, 99), (19, 0), (5, 42), (7, 7), (1, 2), (3, 4), (11, 55)];
        let t = c100_dir(&tr, &[(2, 3)]);
        let (train, test) = load_cifar100(t.path(), Cifar100Labels::Fine).unwrap();
        assert_eq!(train.classes, 100);
        assert_eq!(train.labels, tr.iter().map(|&(_, f)| f as u32).collect::<Vec<_>>());
        assert_eq!(test.labels, vec![3]);
        for r in 0..7 {
            assert!(train.image(r).iter().enumerate().all(|(p, &v)| v == pixel(r, p)), "record {r}");
        }
        let (train, test) = load_cifar100(t.path(), Cifar100Labels::Coarse).unwrap();
        assert_eq!(train.classes, 20);
        assert_eq!(train.labels, tr.iter().map(|&(c, _)| c as u32).collect::<Vec<_>>());
        assert_eq!(test.labels, vec![2]);
        assert_eq!(train.name, "cifar100coarse-train");
    }

    #[test]
    fn cifar100_errors() {
        let t = c100_dir(&[(0, 1), (20, 5)], &[(0, 0)]);
        let e = load_cifar100(t.path(), Cifar100Labels::Fine).unwrap_err();
        assert!(matches!(e, DataError::LabelOutOfRange { record: 1, value: 20, classes: 20, .. }), "{e:?}");
        assert!(msg(&e).contains("train.bin") && msg(&e).contains("coarse label 20"), "{e}");

        let t = c100_dir(&[(0, 1)], &[(0, 100)]);
        let e = load_cifar100(t.path(), Cifar100Labels::Coarse).unwrap_err();
        assert!(matches!(e, DataError::LabelOutOfRange { record: 0, value: 100, .. }), "{e:?}");
        assert!(msg(&e).contains("test.bin") && msg(&e).contains("fine label 100"), "{e}");

        let t = c100_dir(&[(0, 1)], &[(0, 0)]);
        fs::remove_file(t.path().join("train.bin")).unwrap();
        let e = load_cifar100(t.path(), Cifar100Labels::Fine).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }) && msg(&e).contains("train.bin"), "{e}");
        assert!(msg(&e).contains("cifar-100-binary.tar.gz"), "{e}");

        // 3073-byte records are not whole 3074-byte records.
        write(t.path(), "train.bin", &c10_file(&[1, 2]));
        let e = load_cifar100(t.path(), Cifar100Labels::Fine).unwrap_err();
        assert!(
            matches!(e, DataError::Truncated { record: 3074, .. }) && msg(&e).contains("train.bin"),
            "{e}"
        );
    }

    #[test]
    fn detect() {
        let t = c10_dir(&[1]);
        let (train, _) = detect_and_load(t.path()).unwrap();
        assert_eq!(train.name, "cifar10-train");

        let t = tempfile::tempdir().unwrap();
        let sub = t.path().join(CIFAR100_SUBDIR);
        fs::create_dir(&sub).unwrap();
        write(&sub, "train.bin", &c100_file(&[(1, 2)]));
        write(&sub, "test.bin", &c100_file(&[(3, 4)]));
        let (train, test) = detect_and_load(t.path()).unwrap();
        assert_eq!(
            (train.name.as_str(), train.classes, train.labels[0], test.labels[0]),
            ("cifar100-train", 100, 2, 4)
        );

        let t = tempfile::tempdir().unwrap();
        let e = detect_and_load(t.path()).unwrap_err();
        assert!(matches!(e, DataError::NoDataset { .. }), "{e:?}");
        let m = msg(&e);
        for f in
            ["test_batch.bin", "data_batch_1.bin", "cifar-10-batches-bin", "train.bin", "cifar-100-binary"]
        {
            assert!(m.contains(f), "{f} not in {m}");
        }
    }

    #[test]
    fn the_cifar10_note_is_not_given_for_cifar100() {
        let t = c100_dir(&[(0, 1)], &[(0, 0)]);
        let (train, _) = detect_and_load(t.path()).unwrap();
        assert_eq!(cifar10_train_note(&train), None);
    }

    /// (Tests run as root here, so a directory without read permission would still be read: the
    /// OS errors are provoked with a symlink loop and a directory where a file belongs instead.)
    #[test]
    fn directories_that_cannot_be_used_are_reported_as_the_os_says() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("data_batch_1.bin");
        write(t.path(), "data_batch_1.bin", &c10_file(&[1]));
        let e = detect_and_load(&file).unwrap_err();
        assert!(matches!(e, DataError::NotADirectory { .. }) && msg(&e).contains("not a directory"), "{e}");

        let e = detect_and_load(&t.path().join("nowhere")).unwrap_err();
        assert!(matches!(e, DataError::DirNotFound { .. }) && msg(&e).contains("no such directory"), "{e}");

        let looped = t.path().join("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        let e = detect_and_load(&looped).unwrap_err();
        let os = fs::metadata(&looped).unwrap_err().to_string();
        assert!(matches!(e, DataError::Io { .. }) && msg(&e).contains(&os), "{e} (want {os})");

        // A marker file that is a symlink loop: the OS error, not "no CIFAR dataset found".
        let d = c10_dir(&[1]);
        let test = d.path().join("test_batch.bin");
        fs::remove_file(&test).unwrap();
        std::os::unix::fs::symlink(&test, &test).unwrap();
        let e = detect_and_load(d.path()).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }) && msg(&e).contains(&os), "{e}");

        // A directory where a file belongs: the read error, once.
        let d = c10_dir(&[1]);
        fs::remove_file(d.path().join("test_batch.bin")).unwrap();
        fs::create_dir(d.path().join("test_batch.bin")).unwrap();
        let e = detect_and_load(d.path()).unwrap_err();
        let os = fs::read(d.path().join("test_batch.bin")).unwrap_err().to_string();
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(shown.matches(&os).count(), 1, "{shown}");
    }

    #[test]
    fn shared_sample_dir_loads() {
        let dir = Path::new("/work/shared/data/cifar10-jpeg");
        if !dir.join("test_batch.bin").is_file() {
            println!("skipping: {} not present", dir.display());
            return;
        }
        let (train, test) = detect_and_load(dir).unwrap();
        assert_eq!(train.len(), 10_000);
        assert_eq!(test.len(), 10_000);
        assert_eq!(train.images.len(), 10_000 * CIFAR_PIXELS);
        assert!(train.labels.iter().chain(&test.labels).all(|&l| l < 10));
        assert_eq!(test.class_counts(), vec![1000; 10]);
        assert_eq!(cifar10_train_note(&train).unwrap(), "using 1 of 5 training batches (data_batch_1.bin)");
    }
}
