//! The Hub keywords of diffusers' `from_pretrained` (`revision`, `cache_dir`, `local_files_only`,
//! `force_download`, `token`, `use_safetensors`, …), taken out of the `**kwargs` of
//! `UNet2DModel.from_pretrained`, `DiffusionPipeline.from_pretrained` and
//! `SchedulerMixin.from_pretrained` into [`HubOptions`], with a tqdm bar per downloaded file when
//! tqdm is installed.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString};

use super::errors::{argument_error, argument_error_from};
use super::rng::type_name;
use crate::device::{parse_device, parse_dtype};
use crate::hub::{DownloadProgress, HubOptions, Token};
use crate::loading::LoadOptions;

/// The pure-Python progress bars.
const HUB_MODULE: &str = "candle_unet2d._hub";

/// Which `from_pretrained` the keywords are for: each takes a different set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Model,
    Pipeline,
    /// Keywords that are not Hub keywords are config overrides.
    Scheduler,
}

/// The Hub keywords, converted.
#[derive(Debug, Default)]
pub(crate) struct HubArgs {
    pub hub: HubOptions,
    pub use_safetensors: Option<bool>,
    /// `output_loading_info=True` (models only).
    pub output_loading_info: bool,
}

impl HubArgs {
    /// The [`LoadOptions`] of a model or pipeline load: these keywords with the call's own.
    pub(crate) fn load_options(
        self,
        subfolder: Option<String>,
        variant: Option<String>,
        device: &str,
        dtype: &str,
    ) -> crate::Result<LoadOptions> {
        Ok(LoadOptions {
            subfolder,
            variant,
            device: parse_device(device)?,
            dtype: parse_dtype(dtype)?,
            use_safetensors: self.use_safetensors,
            hub: self.hub,
        })
    }
}

/// Keywords every caller takes.
const COMMON: &[&str] =
    &["revision", "cache_dir", "local_files_only", "force_download", "token", "proxies", "resume_download"];
/// Keywords of the model and pipeline loaders.
const WEIGHTS: &[&str] = &["use_safetensors", "low_cpu_mem_usage", "device_map"];

/// Takes the Hub keywords out of `kwargs`. For a model or a pipeline every other keyword is an
/// error naming it; for a scheduler the others are returned (config overrides).
pub(crate) fn take_hub_kwargs<'py>(
    py: Python<'py>,
    kwargs: Option<&Bound<'py, PyDict>>,
    caller: Caller,
) -> PyResult<(HubArgs, Option<Bound<'py, PyDict>>)> {
    let mut args = HubArgs::default();
    let Some(kwargs) = kwargs else {
        args.hub.progress = progress(py)?;
        return Ok((args, None));
    };
    let rest = kwargs.copy()?;
    let take = |name: &str| -> PyResult<Option<Bound<'py, PyAny>>> {
        let value = rest.get_item(name)?;
        if value.is_some() {
            rest.del_item(name)?;
        }
        Ok(value.filter(|v| !v.is_none()))
    };
    let accepted: Vec<&str> = match caller {
        Caller::Model => COMMON.iter().chain(WEIGHTS).chain(&["output_loading_info"]).copied().collect(),
        Caller::Pipeline => COMMON.iter().chain(WEIGHTS).copied().collect(),
        Caller::Scheduler => COMMON.to_vec(),
    };
    let mut values: Vec<(&str, Bound<'py, PyAny>)> = Vec::new();
    for name in &accepted {
        if let Some(v) = take(name)? {
            values.push((name, v));
        }
    }
    for (name, value) in values {
        match name {
            "revision" => args.hub.revision = Some(str_arg(&value, name)?),
            "cache_dir" => {
                let dir: PathBuf = value.extract().map_err(|e| {
                    argument_error_from(py, name, format!("must be a str or os.PathLike, got {}", type_name(&value)), e)
                })?;
                args.hub.cache_dir = Some(dir);
            }
            "local_files_only" => args.hub.local_files_only = bool_arg(&value, name)?,
            "force_download" => args.hub.force_download = bool_arg(&value, name)?,
            "token" => args.hub.token = token_arg(&value)?,
            "use_safetensors" => args.use_safetensors = Some(bool_arg(&value, name)?),
            // Memory use is this crate's own (weights are memory-mapped); any bool is fine.
            "low_cpu_mem_usage" => {
                bool_arg(&value, name)?;
            }
            "device_map" => {
                let cpu = value.is_instance_of::<PyString>() && value.extract::<String>()? == "cpu";
                if !cpu {
                    return Err(argument_error(
                        py,
                        name,
                        format!(
                            "only None or \"cpu\" is supported, got {}; pass device=… to choose where the model runs",
                            value.repr()?
                        ),
                    ));
                }
            }
            "proxies" => {
                return Err(argument_error(
                    py,
                    name,
                    "is not supported: set the HTTPS_PROXY / HTTP_PROXY environment variables instead",
                ))
            }
            // Deprecated in huggingface_hub, where downloads always resume; so they do here.
            "resume_download" => {}
            "output_loading_info" => args.output_loading_info = bool_arg(&value, name)?,
            _ => {}
        }
    }
    args.hub.progress = progress(py)?;
    if caller == Caller::Scheduler {
        return Ok((args, Some(rest)));
    }
    if let Some((key, _)) = rest.iter().next() {
        let key: String = key.extract().unwrap_or_else(|_| "?".into());
        let mut known: Vec<&str> = accepted.clone();
        known.sort();
        return Err(argument_error(
            py,
            &key,
            format!("is not a from_pretrained keyword this package takes (it takes: {})", known.join(", ")),
        ));
    }
    Ok((args, None))
}

fn str_arg(value: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    value
        .extract::<String>()
        .map_err(|_| argument_error(value.py(), name, format!("must be a str or None, got {}", type_name(value))))
}

fn bool_arg(value: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    if value.is_instance_of::<PyBool>() {
        return value.extract();
    }
    Err(argument_error(value.py(), name, format!("must be a bool or None, got {}", type_name(value))))
}

/// huggingface_hub's `token`: a str, `True` (the saved token), `False` (none), `None` (the saved one).
fn token_arg(value: &Bound<'_, PyAny>) -> PyResult<Token> {
    if value.is_instance_of::<PyBool>() {
        return Ok(if value.extract::<bool>()? { Token::FromEnvironment } else { Token::Disabled });
    }
    if value.is_instance_of::<PyString>() {
        return Ok(Token::Value(value.extract()?));
    }
    Err(argument_error(value.py(), "token", format!("must be a str, a bool or None, got {}", type_name(value))))
}

/// A callback moving tqdm bars (`candle_unet2d._hub.download_progress()`), or `None` when tqdm is
/// not installed or bars are disabled.
fn progress(py: Python<'_>) -> PyResult<Option<crate::hub::ProgressFn>> {
    let bars = py.import(HUB_MODULE)?.call_method0("download_progress")?;
    if bars.is_none() {
        return Ok(None);
    }
    let bars: Py<PyAny> = bars.unbind();
    let callback = move |p: &DownloadProgress| {
        Python::attach(|py| {
            // A bar that fails must not fail the download: its error is dropped.
            let _ = bars.call1(py, (p.file.as_str(), p.downloaded, p.total));
        });
    };
    Ok(Some(Arc::new(callback)))
}
