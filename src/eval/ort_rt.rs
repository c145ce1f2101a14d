//! ONNX Runtime through the `ort` crate, loading `libonnxruntime` dynamically.
//!
//! The library is found from `ORT_DYLIB_PATH`, else from the `onnxruntime` / `onnxruntime-gpu`
//! Python wheels (`onnxruntime/capi/libonnxruntime.so.X.Y.Z`). `ort` asks the library for C API
//! version [`MIN_MINOR`] (`ort::MINOR_VERSION`); the C API is backward compatible, so every ONNX
//! Runtime from 1.[`MIN_MINOR`] upward loads (1.32.0, today's `pip install onnxruntime`, included).
//! An older one cannot serve that API version and is refused with a message rather than loaded.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The oldest ONNX Runtime (minor, for major 1) that serves the C API version `ort` requests.
pub const MIN_MINOR: u32 = ort::MINOR_VERSION;

/// Version "1.31.1" from a file name like `libonnxruntime.so.1.31.1`.
pub fn version_of(lib: &Path) -> Option<(u32, u32, u32)> {
    let name = lib.file_name()?.to_string_lossy().into_owned();
    let v = name.split(".so.").nth(1).or_else(|| {
        name.strip_prefix("libonnxruntime.")
            .and_then(|r| r.strip_suffix(".dylib"))
    })?;
    let mut it = v.split('.').map(|x| x.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

fn candidates_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so."))
        })
        .collect();
    v.sort();
    v
}

fn site_packages() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = vec![];
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(v));
    }
    if let Some(h) = std::env::var_os("HOME") {
        let h = PathBuf::from(h);
        roots.push(h.join(".local"));
        if let Ok(rd) = std::fs::read_dir(h.join(".pyenv/versions")) {
            roots.extend(rd.flatten().map(|e| e.path()));
        }
    }
    roots.extend(
        ["/usr", "/usr/local", "/opt/conda"]
            .iter()
            .map(PathBuf::from),
    );
    let mut out = vec![];
    for r in roots {
        for lib in ["lib", "lib64"] {
            if let Ok(rd) = std::fs::read_dir(r.join(lib)) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.starts_with("python3") {
                        out.push(e.path().join("site-packages"));
                        out.push(e.path().join("dist-packages"));
                    }
                }
            }
        }
    }
    out
}

/// Finds an ONNX Runtime library, or says where it looked.
pub fn find_library() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ORT_DYLIB_PATH={} does not exist", p.display()))
        };
    }
    for sp in site_packages() {
        for pkg in ["onnxruntime", "onnxruntime_gpu"] {
            if let Some(p) = candidates_in(&sp.join(pkg).join("capi"))
                .into_iter()
                .next_back()
            {
                return Ok(p);
            }
        }
    }
    Err("no ONNX Runtime library found: set ORT_DYLIB_PATH or `pip install onnxruntime`".into())
}

/// Refuses a library whose file name says it is older than 1.[`MIN_MINOR`], which cannot serve the
/// C API version `ort` requests (`GetApi` would return null). Newer ones are accepted: the C API
/// is backward compatible. A name without a version is let through: the handshake then decides.
pub fn check_version(lib: &Path) -> std::result::Result<(), String> {
    match version_of(lib) {
        Some((maj, min, _)) if maj < 1 || (maj == 1 && min < MIN_MINOR) => Err(format!(
            "{}: ONNX Runtime {maj}.{min} is too old: it does not provide C API version {MIN_MINOR}, \
             which this build needs (ONNX Runtime 1.{MIN_MINOR} or newer; `pip install -U onnxruntime`)",
            lib.display()
        )),
        // `ort` compares minor versions only and would refuse a 2.x library with a bare
        // "bad version"; say why instead.
        Some((maj, min, _)) if maj > 1 => Err(format!(
            "{}: ONNX Runtime {maj}.{min} is a new major version whose C API this build does not \
             know (it supports 1.{MIN_MINOR} and every later 1.x)",
            lib.display()
        )),
        _ => Ok(()),
    }
}

static ENV: OnceLock<std::result::Result<(ort::environment::Environment, PathBuf), String>> =
    OnceLock::new();

/// Loads the library once; returns its path.
pub fn init() -> Result<PathBuf> {
    let r = ENV.get_or_init(|| {
        let lib = find_library()?;
        check_version(&lib)?;
        let env = ort::init_from(&lib)
            .map_err(|e| format!("{}: {e}", lib.display()))?
            .build()
            .map_err(|e| format!("{}: {e}", lib.display()))?;
        Ok((env, lib))
    });
    match r {
        Ok((_, lib)) => Ok(lib.clone()),
        Err(e) => Err(Error::Usage(e.clone())),
    }
}

/// Which execution provider a session runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda,
}

/// The execution provider new sessions will use, and why: CUDA when the loaded library has the
/// CUDA provider and an NVIDIA GPU is present, CPU otherwise.
pub fn provider() -> (Provider, String) {
    use ort::ep::ExecutionProvider;
    if init().is_err() {
        return (Provider::Cpu, "no library".into());
    }
    let has_ep = ort::ep::CUDA::is_available().unwrap_or(false);
    let has_gpu = Path::new("/dev/nvidiactl").exists() || Path::new("/dev/nvidia0").exists();
    decide_provider(has_ep, has_gpu)
}

/// The provider decision as a function of what the library offers (`has_cuda_ep`) and whether
/// an NVIDIA GPU is present, with the line that says why.
pub fn decide_provider(has_cuda_ep: bool, has_gpu: bool) -> (Provider, String) {
    match (has_cuda_ep, has_gpu) {
        (true, true) => (Provider::Cuda, "CUDA execution provider".into()),
        (true, false) => (
            Provider::Cpu,
            "CPU execution provider; the library has CUDA but no NVIDIA GPU is present".into(),
        ),
        (false, _) => (
            Provider::Cpu,
            "CPU execution provider; the library has no CUDA provider".into(),
        ),
    }
}

/// One ONNX Runtime session (dynamic batch).
pub struct OrtModel {
    session: ort::session::Session,
    input: String,
    pub provider: Provider,
}

impl OrtModel {
    pub fn new(path: &Path, threads: usize) -> Result<OrtModel> {
        init()?;
        let env = &ENV.get().unwrap().as_ref().unwrap().0;
        let e = |m: String| Error::bad_file(path, format!("onnxruntime: {m}"));
        let builder = || {
            ort::session::Session::builder(env)
                .map_err(|x| e(x.to_string()))?
                .with_intra_threads(threads.max(1))
                .map_err(|x| e(x.to_string()))
        };
        let mut provider = provider().0;
        let session = if provider == Provider::Cuda {
            let cuda = ort::ep::CUDA::default().build().error_on_failure();
            match builder()?
                .with_execution_providers([cuda])
                .map_err(|x| x.to_string())
                .and_then(|mut b| b.commit_from_file(path).map_err(|x| x.to_string()))
            {
                Ok(s) => s,
                Err(msg) => {
                    eprintln!("warning: CUDA execution provider failed ({msg}); using CPU");
                    provider = Provider::Cpu;
                    builder()?
                        .commit_from_file(path)
                        .map_err(|x| e(x.to_string()))?
                }
            }
        } else {
            builder()?
                .commit_from_file(path)
                .map_err(|x| e(x.to_string()))?
        };
        let input = session
            .inputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| e("no input".into()))?;
        Ok(OrtModel {
            session,
            input,
            provider,
        })
    }

    /// Runs one batch `[b, C, H, W]`; returns every output.
    pub fn run_batch(
        &mut self,
        x: &[f32],
        b: usize,
        chw: (usize, usize, usize),
    ) -> Result<Vec<super::HostTensor>> {
        let er = |e: ort::Error| Error::Usage(format!("onnxruntime: {e}"));
        let t =
            ort::value::Tensor::from_array(([b, chw.0, chw.1, chw.2], x.to_vec())).map_err(er)?;
        let outs = self
            .session
            .run(ort::inputs![self.input.as_str() => t])
            .map_err(er)?;
        let mut v = Vec::with_capacity(outs.len());
        for (_, o) in outs.iter() {
            let (shape, data) = o.try_extract_tensor::<f32>().map_err(er)?;
            v.push(super::HostTensor {
                shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                data: data.to_vec(),
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CUDA only when both the library's provider and a GPU are there; each CPU line says why.
    #[test]
    fn the_provider_follows_the_library_and_the_gpu() {
        assert_eq!(decide_provider(true, true).0, Provider::Cuda);
        let (p, why) = decide_provider(true, false);
        assert_eq!(p, Provider::Cpu);
        assert!(why.contains("no NVIDIA GPU"), "{why}");
        for gpu in [false, true] {
            let (p, why) = decide_provider(false, gpu);
            assert_eq!(p, Provider::Cpu);
            assert!(why.contains("no CUDA provider"), "{why}");
        }
    }

    /// Versions older than the C API `ort` requests are refused by name, with the reason; every
    /// later 1.x (1.32 is what `pip install onnxruntime` gives today) is accepted.
    #[test]
    fn too_old_versions_are_refused_and_newer_ones_accepted() {
        let lib = |v: &str| PathBuf::from(format!("/x/capi/libonnxruntime.so.{v}"));
        assert_eq!(version_of(&lib("1.31.1")), Some((1, 31, 1)));
        assert_eq!(
            version_of(Path::new("libonnxruntime.1.22.0.dylib")),
            Some((1, 22, 0))
        );
        assert_eq!(
            MIN_MINOR, 17,
            "ort's requested C API version moved: update docs/cli.md"
        );
        for ok in ["1.17.0", "1.20.0", "1.31.1", "1.32.0", "1.40.2"] {
            assert!(check_version(&lib(ok)).is_ok(), "{ok}");
        }
        for bad in ["1.16.3", "1.0.0", "0.31.0"] {
            let e = check_version(&lib(bad)).unwrap_err();
            let why = format!("too old: it does not provide C API version {MIN_MINOR}");
            assert!(e.contains(&why), "{bad}: {e}");
        }
        let e = check_version(&lib("2.0.0")).unwrap_err();
        assert!(e.contains("new major version"), "{e}");
        // No version in the name: left to the library's own handshake.
        assert!(check_version(Path::new("/opt/libonnxruntime.so")).is_ok());
    }
}
