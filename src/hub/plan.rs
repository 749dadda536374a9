//! Which files of a repository a load needs, decided from its file list alone (the revision API's
//! `siblings`, or a cached snapshot's files), so that nothing else is downloaded: the model's
//! `config.json` and the one weights format [`choose_weights`] picks; for a pipeline also
//! `model_index.json` and the scheduler config; for a scheduler its `scheduler_config.json`.

use crate::error::Result;
use crate::loading::{choose_weights, WeightsChoice};

use super::error::HubError;
use super::Wanted;

/// The files to fetch: `files` first, then each of `indexes` (also in `files`) is read for the
/// shards it names, which live in its folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub files: Vec<String>,
    pub indexes: Vec<String>,
}

/// What in the repository does not fit the request, for [`HubError::EntryNotFound`].
pub struct Missing {
    pub path: String,
    pub hint: String,
}

/// The plan for `wanted` over the repository's files `all` (paths relative to the root).
pub fn plan(wanted: &Wanted, all: &[String]) -> std::result::Result<Plan, PlanError> {
    let has = |p: &str| all.iter().any(|f| f == p);
    let mut plan = Plan::default();
    match wanted {
        Wanted::Model { subfolder, variant, use_safetensors } => {
            let prefix = match subfolder {
                Some(sub) => format!("{}/", sub.trim_end_matches('/')),
                None if !has("config.json") && has("unet/config.json") => "unet/".into(),
                None => String::new(),
            };
            add_model(&mut plan, all, &prefix, variant.as_deref(), *use_safetensors)?;
        }
        Wanted::Pipeline { variant, use_safetensors } => {
            if has("model_index.json") {
                plan.files.push("model_index.json".into());
            }
            let unet = if !has("config.json") && has("unet/config.json") { "unet/" } else { "" };
            add_model(&mut plan, all, unet, variant.as_deref(), *use_safetensors)?;
            // The scheduler beside the UNet's config, else the pipeline's scheduler/ (as
            // `pipeline::scheduler_config_for` looks locally); none means diffusers' default.
            let candidates: &[&str] = if unet.is_empty() {
                &["scheduler_config.json"]
            } else {
                &["unet/scheduler_config.json", "scheduler/scheduler_config.json"]
            };
            if let Some(found) = candidates.iter().find(|c| has(c)) {
                plan.files.push(found.to_string());
            }
        }
        Wanted::Scheduler { subfolder } => {
            let candidates = match subfolder {
                Some(sub) => vec![format!("{}/scheduler_config.json", sub.trim_end_matches('/'))],
                None => vec!["scheduler_config.json".into(), "scheduler/scheduler_config.json".into()],
            };
            let found = candidates
                .iter()
                .find(|c| has(c))
                .ok_or_else(|| Missing { path: candidates.join(" or "), hint: String::new() })?;
            plan.files.push(found.clone());
        }
    }
    Ok(plan)
}

/// A plan that cannot be made: a needed file is missing, or an argument is bad.
pub enum PlanError {
    Missing(Missing),
    Other(crate::error::Error),
}

impl From<Missing> for PlanError {
    fn from(m: Missing) -> Self {
        PlanError::Missing(m)
    }
}

impl PlanError {
    /// The crate error for repository `repo` at `revision`.
    pub fn into_error(self, repo: &str, revision: &str) -> crate::error::Error {
        match self {
            PlanError::Missing(Missing { path, hint }) => {
                HubError::EntryNotFound { repo: repo.into(), revision: revision.into(), path, hint }.into()
            }
            PlanError::Other(e) => e,
        }
    }
}

/// `config.json` and the weights of the model folder at `prefix` (`""` or `"unet/"`).
fn add_model(
    plan: &mut Plan,
    all: &[String],
    prefix: &str,
    variant: Option<&str>,
    use_safetensors: Option<bool>,
) -> std::result::Result<(), PlanError> {
    let config = format!("{prefix}config.json");
    if !all.contains(&config) {
        let folders = top_folders(all);
        let hint = if folders.is_empty() { String::new() } else { format!(" (its folders: {})", folders.join(", ")) };
        return Err(Missing { path: config, hint }.into());
    }
    plan.files.push(config);
    let names: Vec<&str> = all.iter().filter_map(|f| f.strip_prefix(prefix)).filter(|n| !n.contains('/')).collect();
    let folder =
        if prefix.is_empty() { "the repository's root".to_string() } else { prefix.trim_end_matches('/').to_string() };
    let choice: Result<WeightsChoice> = choose_weights(&names, variant, use_safetensors, &folder);
    match choice {
        Ok(WeightsChoice::Single(name)) => plan.files.push(format!("{prefix}{name}")),
        Ok(WeightsChoice::Index(name)) => {
            plan.files.push(format!("{prefix}{name}"));
            plan.indexes.push(format!("{prefix}{name}"));
        }
        Err(crate::error::Error::NotFound { what }) => {
            return Err(Missing { path: "the weights".into(), hint: format!(": no {what}") }.into());
        }
        Err(other) => return Err(PlanError::Other(other)),
    }
    Ok(())
}

/// The repository's top-level folders, for a hint when `config.json` is not where it was looked for.
fn top_folders(all: &[String]) -> Vec<String> {
    let mut folders: Vec<String> = all.iter().filter_map(|f| f.split_once('/').map(|(d, _)| format!("{d}/"))).collect();
    folders.sort();
    folders.dedup();
    folders.truncate(20);
    folders
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pipeline_takes_only_what_it_loads() {
        let repo = names(&[
            "model_index.json",
            "README.md",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "scheduler/scheduler_config.json",
        ]);
        let p = plan(&Wanted::Pipeline { variant: None, use_safetensors: None }, &repo).ok().unwrap();
        assert_eq!(
            p.files,
            names(&[
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "scheduler/scheduler_config.json"
            ])
        );
        let p = plan(
            &Wanted::Model { subfolder: Some("unet".into()), variant: Some("fp16".into()), use_safetensors: None },
            &repo,
        )
        .ok()
        .unwrap();
        assert_eq!(p.files, names(&["unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"]));
        let p =
            plan(&Wanted::Model { subfolder: None, variant: None, use_safetensors: Some(false) }, &repo).ok().unwrap();
        assert_eq!(p.files, names(&["unet/config.json", "unet/diffusion_pytorch_model.bin"]));
        let p = plan(&Wanted::Scheduler { subfolder: None }, &repo).ok().unwrap();
        assert_eq!(p.files, names(&["scheduler/scheduler_config.json"]));
        assert!(plan(&Wanted::Model { subfolder: Some("vae".into()), variant: None, use_safetensors: None }, &repo)
            .is_err());
    }
}
