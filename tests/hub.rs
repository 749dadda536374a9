//! Hub downloads against a loopback stand-in for the Hub (`common/hub_server.rs`): what is
//! fetched, where it lands in the cache, what is reused, and each way it fails. No test reaches a
//! real network address. Options are passed explicitly (endpoint, cache, token); the environment
//! variables are tested in a child process of their own, since the environment is process-wide.

mod common;
#[path = "common/hub_server.rs"]
mod hub_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_unet2d::hub::{HubError, HubOptions, Token};
use candle_unet2d::pipeline::UNet2DPipeline;
use candle_unet2d::schedulers::config::locate_config_file;
use candle_unet2d::{Error, LoadOptions, UNet2DModel};
use hub_server::{folder_files, sha256_hex, Faults, HubServer, Repo};

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";

fn fixture(rel: &str) -> PathBuf {
    common::fixture(rel)
}

/// `org/ddpm`: a model folder (config + safetensors) plus files a load never needs.
fn ddpm_repo() -> Repo {
    Repo::new("org/ddpm", C1, folder_files(&fixture("unet2d/ddpm_default_blocks"), ""))
}

/// `org/tiny`: one config with three weights files (`.bin`, fp16 safetensors) and a README.
fn tiny_repo() -> Repo {
    let mut files = folder_files(&fixture("unet2d/fp16_variant"), "");
    files.extend(folder_files(&fixture("unet2d/pytorch_bin"), ""));
    files.insert("README.md".into(), b"# tiny\n".to_vec());
    Repo::new("org/tiny", C1, files)
}

/// `org/digits`: the shipped pipeline folder (model_index.json, unet/, scheduler/).
fn digits_repo() -> Repo {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join("digits16");
    Repo::new("org/digits", C1, folder_files(&root, ""))
}

/// A fresh cache folder for one test.
fn temp_cache(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unet2d-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn hub(server: &HubServer, cache: &Path) -> HubOptions {
    let mut hub = HubOptions::default();
    hub.endpoint = Some(server.endpoint.clone());
    hub.cache_dir = Some(cache.to_path_buf());
    hub.token = Token::Disabled;
    hub
}

fn load_options(hub: HubOptions) -> LoadOptions {
    LoadOptions { hub, ..LoadOptions::default() }
}

/// The model's output on a fixed 16×16 input.
fn forward(model: &UNet2DModel) -> Tensor {
    let channels = model.config().in_channels;
    let sample = Tensor::ones((1, channels, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    // Class-conditional models (the digits pipeline) get class 3.
    let labels = model.config().num_class_embeds.map(|_| Tensor::new(&[3i64], &Device::Cpu).unwrap());
    model.forward(&sample, 10i64, labels.as_ref()).unwrap()
}

fn hub_error(result: Result<impl std::fmt::Debug, Error>) -> HubError {
    match result {
        Err(Error::Hub(e)) => e,
        other => panic!("expected a Hub error, got {other:?}"),
    }
}

#[test]
fn downloads_then_loads_like_the_local_folder() {
    let server = HubServer::start(vec![ddpm_repo()]);
    let cache = temp_cache("download");
    let model = UNet2DModel::from_pretrained("org/ddpm", &load_options(hub(&server, &cache))).unwrap();
    let local = UNet2DModel::from_pretrained(fixture("unet2d/ddpm_default_blocks"), &LoadOptions::default()).unwrap();
    common::assert_close(&forward(&model), &forward(&local), 0.0, "downloaded vs local");
    // Only the config and the weights: not case.json, not expected.safetensors.
    assert_eq!(server.downloaded(), ["config.json", "diffusion_pytorch_model.safetensors"]);

    // huggingface_hub's layout: refs/main, blobs named by ETag, relative symlinks in the snapshot.
    let repo = cache.join("models--org--ddpm");
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), C1);
    let weights = std::fs::read(fixture("unet2d/ddpm_default_blocks/diffusion_pytorch_model.safetensors")).unwrap();
    let sha = sha256_hex(&weights);
    assert_eq!(std::fs::read(repo.join("blobs").join(&sha)).unwrap(), weights);
    let link = repo.join("snapshots").join(C1).join("diffusion_pytorch_model.safetensors");
    #[cfg(unix)]
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../../blobs").join(&sha));
    assert!(link.is_file());
    let leftovers: Vec<_> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".incomplete") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn a_second_load_uses_the_cache_even_without_the_server() {
    let server = HubServer::start(vec![ddpm_repo()]);
    let cache = temp_cache("reuse");
    let options = load_options(hub(&server, &cache));
    UNet2DModel::from_pretrained("org/ddpm", &options).unwrap();
    server.clear_requests();
    // Online again: the revision is asked for, no file is fetched again.
    UNet2DModel::from_pretrained("org/ddpm", &options).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].starts_with("GET /api/models/org/ddpm/revision/main"), "{requests:?}");
    // local_files_only: nothing asked at all.
    server.clear_requests();
    let mut offline = options.clone();
    offline.hub.local_files_only = true;
    UNet2DModel::from_pretrained("org/ddpm", &offline).unwrap();
    assert!(server.requests().is_empty());
    // The server gone: huggingface_hub falls back on the cache, and so does this.
    drop(server);
    UNet2DModel::from_pretrained("org/ddpm", &options).unwrap();
    // force_download cannot fall back: it must fetch.
    let server = HubServer::start(vec![ddpm_repo()]);
    let mut failing = options.clone();
    failing.hub.endpoint = Some(server.endpoint.clone());
    server.set_faults(Faults { api_status: Some(503), ..Faults::default() });
    // A failing Hub (503) is stood in for too; with an empty cache, the error says both.
    UNet2DModel::from_pretrained("org/ddpm", &failing).unwrap();
    failing.hub.cache_dir = Some(temp_cache("reuse-empty"));
    let err = hub_error(UNet2DModel::from_pretrained("org/ddpm", &failing));
    assert!(matches!(err, HubError::Unreachable { .. }) && err.to_string().contains("503"), "{err}");
    drop(server);
    let mut forced = options.clone();
    forced.hub.force_download = true;
    assert!(matches!(hub_error(UNet2DModel::from_pretrained("org/ddpm", &forced)), HubError::Transfer { .. }));
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn offline_with_nothing_cached_says_what_the_cache_holds() {
    let server = HubServer::start(vec![ddpm_repo()]);
    let cache = temp_cache("offline");
    let mut options = load_options(hub(&server, &cache));
    options.hub.local_files_only = true;
    let err = hub_error(UNet2DModel::from_pretrained("org/ddpm", &options));
    let text = err.to_string();
    assert!(matches!(err, HubError::NotCached { .. }), "{text}");
    assert!(text.contains("local_files_only") && text.contains("has nothing for this repository"), "{text}");

    options.hub.local_files_only = false;
    UNet2DModel::from_pretrained("org/ddpm", &options).unwrap();
    options.hub.local_files_only = true;
    options.hub.revision = Some("v2".into());
    let text = hub_error(UNet2DModel::from_pretrained("org/ddpm", &options)).to_string();
    assert!(text.contains("\"v2\"") && text.contains(&format!("main -> {C1}")) && text.contains(C1), "{text}");
    // Unreachable with nothing cached: the connection error and the cache, in one message.
    drop(server);
    let mut gone = options.clone();
    gone.hub.local_files_only = false;
    let err = hub_error(UNet2DModel::from_pretrained("org/ddpm", &gone));
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn revisions_by_tag_and_by_commit() {
    let mut repo = ddpm_repo();
    repo.commits.insert(C2.into(), tiny_repo().commits[C1].clone());
    repo.refs.insert("v1".into(), C2.into());
    let server = HubServer::start(vec![repo]);
    let cache = temp_cache("revisions");
    let mut options = load_options(hub(&server, &cache));
    options.hub.revision = Some("v1".into());
    let tagged = UNet2DModel::from_pretrained("org/ddpm", &options).unwrap();
    let tiny = UNet2DModel::from_pretrained(fixture("unet2d/pytorch_bin"), &LoadOptions::default()).unwrap();
    assert_eq!(tagged.config().block_out_channels, tiny.config().block_out_channels);
    let refs = cache.join("models--org--ddpm").join("refs");
    assert_eq!(std::fs::read_to_string(refs.join("v1")).unwrap(), C2);

    options.hub.revision = Some(C1.into());
    let by_commit = UNet2DModel::from_pretrained("org/ddpm", &options).unwrap();
    let ddpm = UNet2DModel::from_pretrained(fixture("unet2d/ddpm_default_blocks"), &LoadOptions::default()).unwrap();
    assert_eq!(by_commit.config().block_out_channels, ddpm.config().block_out_channels);
    // A commit needs no ref.
    assert!(!refs.join(C1).exists() && !refs.join("main").exists());
    // Offline, the tag still resolves through refs/v1.
    options.hub.revision = Some("v1".into());
    options.hub.local_files_only = true;
    UNet2DModel::from_pretrained("org/ddpm", &options).unwrap();

    options.hub.local_files_only = false;
    options.hub.revision = Some("nope".into());
    let err = hub_error(UNet2DModel::from_pretrained("org/ddpm", &options));
    assert!(matches!(&err, HubError::RevisionNotFound { revision, .. } if revision == "nope"), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn only_the_chosen_weights_are_downloaded() {
    let server = HubServer::start(vec![tiny_repo()]);
    let cases: [(Option<&str>, Option<bool>, &[&str]); 3] = [
        (None, None, &["config.json", "diffusion_pytorch_model.bin"]),
        (Some("fp16"), None, &["config.json", "diffusion_pytorch_model.fp16.safetensors"]),
        (Some("fp16"), Some(true), &["config.json", "diffusion_pytorch_model.fp16.safetensors"]),
    ];
    for (i, (variant, use_safetensors, expected)) in cases.into_iter().enumerate() {
        let cache = temp_cache(&format!("variant{i}"));
        server.clear_requests();
        let options =
            LoadOptions { variant: variant.map(String::from), use_safetensors, ..load_options(hub(&server, &cache)) };
        UNet2DModel::from_pretrained("org/tiny", &options).unwrap();
        assert_eq!(server.downloaded(), expected, "variant {variant:?}, use_safetensors {use_safetensors:?}");
        std::fs::remove_dir_all(&cache).unwrap();
    }
    // use_safetensors=True and no safetensors without a variant: an error, nothing downloaded.
    let cache = temp_cache("variant-none");
    server.clear_requests();
    let options = LoadOptions { use_safetensors: Some(true), ..load_options(hub(&server, &cache)) };
    let err = hub_error(UNet2DModel::from_pretrained("org/tiny", &options));
    assert!(matches!(err, HubError::EntryNotFound { .. }) && err.to_string().contains("use_safetensors"), "{err}");
    assert!(server.downloaded().is_empty());
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn a_sharded_model_downloads_its_index_and_shards() {
    let model = UNet2DModel::from_pretrained(fixture("unet2d/ddpm_default_blocks"), &LoadOptions::default()).unwrap();
    let folder = temp_cache("sharded-src");
    let save = candle_unet2d::SaveOptions { max_shard_size: 1 << 20, ..Default::default() };
    model.save_pretrained(&folder, &save).unwrap();
    let files = folder_files(&folder, "");
    let shards: Vec<&String> = files.keys().filter(|k| k.contains("-of-")).collect();
    assert!(shards.len() >= 2, "{:?}", files.keys());
    let server = HubServer::start(vec![Repo::new("org/sharded", C1, files.clone())]);
    let cache = temp_cache("sharded");
    let loaded = UNet2DModel::from_pretrained("org/sharded", &load_options(hub(&server, &cache))).unwrap();
    common::assert_close(&forward(&loaded), &forward(&model), 0.0, "sharded download");
    let mut expected: Vec<String> = files.keys().cloned().collect();
    expected.sort();
    assert_eq!(server.downloaded(), expected);
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
}

/// The blob path and bytes of `org/ddpm`'s weights.
fn ddpm_weights(cache: &Path) -> (PathBuf, Vec<u8>) {
    let weights = std::fs::read(fixture("unet2d/ddpm_default_blocks/diffusion_pytorch_model.safetensors")).unwrap();
    (cache.join("models--org--ddpm").join("blobs").join(sha256_hex(&weights)), weights)
}

fn incomplete(blob: &Path) -> PathBuf {
    blob.with_file_name(format!("{}.incomplete", blob.file_name().unwrap().to_string_lossy()))
}

#[test]
fn a_partial_download_is_resumed_with_a_range_request() {
    let server = HubServer::start(vec![ddpm_repo()]);
    let cache = temp_cache("resume");
    let (blob, weights) = ddpm_weights(&cache);
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    let half = weights.len() / 2;
    std::fs::write(incomplete(&blob), &weights[..half]).unwrap();
    UNet2DModel::from_pretrained("org/ddpm", &load_options(hub(&server, &cache))).unwrap();
    let ranged: Vec<String> = server.requests().into_iter().filter(|r| r.contains("[range=")).collect();
    assert_eq!(ranged.len(), 1, "{:?}", server.requests());
    assert!(ranged[0].starts_with("GET /cdn/") && ranged[0].contains(&format!("[range={half}-]")), "{ranged:?}");
    assert_eq!(std::fs::read(&blob).unwrap(), weights);
    assert!(!incomplete(&blob).exists());

    // A server that ignores Range sends the whole file: the download starts over, cleanly.
    let cache2 = temp_cache("resume-ignored");
    let (blob2, _) = ddpm_weights(&cache2);
    std::fs::create_dir_all(blob2.parent().unwrap()).unwrap();
    std::fs::write(incomplete(&blob2), &weights[..half]).unwrap();
    server.set_faults(Faults { ignore_range: true, ..Faults::default() });
    UNet2DModel::from_pretrained("org/ddpm", &load_options(hub(&server, &cache2))).unwrap();
    assert_eq!(std::fs::read(&blob2).unwrap(), weights);

    // A partial file that is no prefix of the file fails the sha256 check, and is discarded.
    let cache3 = temp_cache("resume-garbage");
    let (blob3, _) = ddpm_weights(&cache3);
    std::fs::create_dir_all(blob3.parent().unwrap()).unwrap();
    std::fs::write(incomplete(&blob3), vec![7u8; half]).unwrap();
    server.set_faults(Faults::default());
    let options = load_options(hub(&server, &cache3));
    let err = hub_error(UNet2DModel::from_pretrained("org/ddpm", &options));
    assert!(matches!(err, HubError::Corrupt { .. }), "{err}");
    assert!(!incomplete(&blob3).exists() && !blob3.exists());
    UNet2DModel::from_pretrained("org/ddpm", &options).unwrap();
    for c in [cache, cache2, cache3] {
        std::fs::remove_dir_all(c).unwrap();
    }
}

#[test]
fn a_truncated_or_corrupt_transfer_leaves_nothing_in_the_snapshot() {
    let server = HubServer::start(vec![ddpm_repo()]);
    let cache = temp_cache("truncated");
    let options = load_options(hub(&server, &cache));
    let (blob, weights) = ddpm_weights(&cache);
    let in_snapshot = cache.join("models--org--ddpm/snapshots").join(C1).join("diffusion_pytorch_model.safetensors");

    server.set_faults(Faults { truncate_lfs_at: Some(100_000), ..Faults::default() });
    let err = hub_error(UNet2DModel::from_pretrained("org/ddpm", &options));
    assert!(matches!(err, HubError::Transfer { .. }), "{err}");
    assert!(!in_snapshot.exists() && in_snapshot.symlink_metadata().is_err() && !blob.exists());
    // What arrived is kept for the next run, which resumes from it.
    assert_eq!(std::fs::metadata(incomplete(&blob)).unwrap().len(), 100_000);
    server.set_faults(Faults::default());
    server.clear_requests();
    UNet2DModel::from_pretrained("org/ddpm", &options).unwrap();
    assert!(server.requests().iter().any(|r| r.contains("[range=100000-]")), "{:?}", server.requests());
    assert_eq!(std::fs::read(&in_snapshot).unwrap(), weights);

    let cache2 = temp_cache("corrupt");
    let options = load_options(hub(&server, &cache2));
    server.set_faults(Faults { corrupt_lfs: true, ..Faults::default() });
    let err = hub_error(UNet2DModel::from_pretrained("org/ddpm", &options));
    assert!(matches!(err, HubError::Corrupt { .. }) && err.to_string().contains("sha256"), "{err}");
    let (blob2, _) = ddpm_weights(&cache2);
    let snapshot2 = cache2.join("models--org--ddpm/snapshots").join(C1);
    assert!(!snapshot2.join("diffusion_pytorch_model.safetensors").exists());
    assert!(!blob2.exists() && !incomplete(&blob2).exists());
    for c in [cache, cache2] {
        std::fs::remove_dir_all(c).unwrap();
    }
}

#[test]
fn a_private_repository_needs_its_token() {
    let mut repo = ddpm_repo();
    repo.id = "org/private".into();
    repo.token = Some("hf_secret".into());
    let server = HubServer::start(vec![repo]);
    let cache = temp_cache("private");
    let mut options = load_options(hub(&server, &cache));
    let err = hub_error(UNet2DModel::from_pretrained("org/private", &options));
    assert!(matches!(err, HubError::RepoNotFound { status: 401, .. }) && err.to_string().contains("token"), "{err}");
    options.hub.token = Token::Value("hf_wrong".into());
    assert!(matches!(hub_error(UNet2DModel::from_pretrained("org/private", &options)), HubError::RepoNotFound { .. }));
    options.hub.token = Token::Value("hf_secret".into());
    server.clear_requests();
    UNet2DModel::from_pretrained("org/private", &options).unwrap();
    // The token goes to the Hub, never to the host the weights are redirected to.
    let requests = server.requests();
    assert!(requests.iter().filter(|r| !r.contains("/cdn/")).all(|r| r.ends_with("[auth]")), "{requests:?}");
    assert!(requests.iter().filter(|r| r.contains("/cdn/")).all(|r| !r.contains("[auth]")), "{requests:?}");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn missing_files_and_repositories_are_named() {
    let mut files: BTreeMap<String, Vec<u8>> = folder_files(&fixture("unet2d/ddpm_default_blocks"), "");
    files.retain(|k, _| k == "config.json");
    let server = HubServer::start(vec![Repo::new("org/noweights", C1, files), digits_repo()]);
    let cache = temp_cache("missing");
    let options = load_options(hub(&server, &cache));
    let err = hub_error(UNet2DModel::from_pretrained("org/noweights", &options));
    assert!(
        matches!(err, HubError::EntryNotFound { .. }) && err.to_string().contains("diffusion_pytorch_model"),
        "{err}"
    );
    let sub = LoadOptions { subfolder: Some("vae".into()), ..options.clone() };
    let err = hub_error(UNet2DModel::from_pretrained("org/digits", &sub));
    assert!(err.to_string().contains("vae/config.json") && err.to_string().contains("unet/"), "{err}");
    let err = hub_error(UNet2DModel::from_pretrained("org/absent", &options));
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err}");
    let bad = LoadOptions { subfolder: Some("../x".into()), ..options.clone() };
    assert!(matches!(UNet2DModel::from_pretrained("org/digits", &bad), Err(Error::InvalidArgument { .. })));
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn a_server_that_is_not_a_hub_is_named() {
    let server = HubServer::start(vec![ddpm_repo()]);
    let cache = temp_cache("nothub");
    let options = load_options(hub(&server, &cache));
    server.set_faults(Faults { not_a_hub: true, ..Faults::default() });
    let err = hub_error(UNet2DModel::from_pretrained("org/ddpm", &options));
    assert!(matches!(err, HubError::NotAHub { .. }) && err.to_string().contains("HF_ENDPOINT"), "{err}");
    server.set_faults(Faults { no_repo_commit: true, ..Faults::default() });
    let err = hub_error(UNet2DModel::from_pretrained("org/ddpm", &options));
    assert!(matches!(err, HubError::NotAHub { .. }) && err.to_string().contains("X-Repo-Commit"), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn a_pipeline_downloads_its_unet_and_scheduler() {
    let mut repo = digits_repo();
    repo.commits.get_mut(C1).unwrap().insert("unet/diffusion_pytorch_model.fp16.safetensors".into(), vec![0; 10]);
    let server = HubServer::start(vec![repo]);
    let cache = temp_cache("pipeline");
    let (pipe, report) =
        UNet2DPipeline::from_pretrained_with_report("org/digits", &load_options(hub(&server, &cache))).unwrap();
    assert_eq!(
        server.downloaded(),
        [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors"
        ]
    );
    let local_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join("digits16");
    let local = UNet2DPipeline::from_pretrained(&local_root, &LoadOptions::default()).unwrap();
    assert_eq!(pipe.class_name, local.class_name);
    assert_eq!(pipe.scheduler.kind(), local.scheduler.kind());
    assert_eq!(pipe.path, cache.join("models--org--digits/snapshots").join(C1));
    assert_eq!(report.unet.model_dir, pipe.path.join("unet"));
    assert!(report.scheduler_json.as_ref().is_some_and(|j| j.get("_class_name").is_some()));
    common::assert_close(&forward(&pipe.unet), &forward(&local.unet), 0.0, "pipeline unet");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn a_scheduler_downloads_its_config_only() {
    let server = HubServer::start(vec![digits_repo()]);
    for (i, sub) in [None, Some("scheduler")].into_iter().enumerate() {
        let cache = temp_cache(&format!("scheduler{i}"));
        server.clear_requests();
        let file = locate_config_file(Path::new("org/digits"), sub, &hub(&server, &cache)).unwrap();
        assert!(file.ends_with("scheduler/scheduler_config.json"), "{}", file.display());
        assert_eq!(server.downloaded(), ["scheduler/scheduler_config.json"]);
        candle_unet2d::schedulers::Scheduler::from_pretrained(&file).unwrap();
        std::fs::remove_dir_all(&cache).unwrap();
    }
}

#[test]
fn the_cli_downloads_a_hub_model() {
    let server = HubServer::start(vec![ddpm_repo()]);
    let cache = temp_cache("cli");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_unet2d"))
            .args(args)
            .env("HF_ENDPOINT", &server.endpoint)
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HOME", &cache)
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let out = run(&["info", "--model", "org/ddpm"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("snapshots/{C1}")), "{stdout}");
    let out = run(&["info", "--model", "org/ddpm", "--revision", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.starts_with("error: ") && stderr.contains("revision \"nope\""), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    std::fs::remove_dir_all(&cache).unwrap();
}

/// Runs [`environment_child`] in a child process with the marker set: the Hub variables are
/// process-wide, so they are set there, where no other test runs.
#[test]
fn the_hub_environment_variables_are_honoured() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["environment_child", "--exact", "--test-threads=1", "--nocapture"])
        .env("UNET2D_HUB_ENV_CHILD", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

#[test]
fn environment_child() {
    if std::env::var_os("UNET2D_HUB_ENV_CHILD").is_none() {
        return;
    }
    let mut private = ddpm_repo();
    private.id = "org/private".into();
    private.token = Some("hf_secret".into());
    let server = HubServer::start(vec![ddpm_repo(), private]);
    let home = temp_cache("env-home");
    let cache = home.join("hub-cache");
    std::env::set_var("HF_ENDPOINT", &server.endpoint);
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::remove_var("HF_TOKEN");
    std::env::remove_var("HF_TOKEN_PATH");
    std::env::remove_var("HF_HUB_OFFLINE");

    // HF_ENDPOINT and HF_HUB_CACHE.
    UNet2DModel::from_pretrained("org/ddpm", &LoadOptions::default()).unwrap();
    assert!(cache.join("models--org--ddpm/refs/main").is_file());
    // HF_HUB_OFFLINE=1: the cached model loads without a request; another one is not cached.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    server.clear_requests();
    UNet2DModel::from_pretrained("org/ddpm", &LoadOptions::default()).unwrap();
    assert!(server.requests().is_empty());
    let err = hub_error(UNet2DModel::from_pretrained("org/private", &LoadOptions::default()));
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    std::env::remove_var("HF_HUB_OFFLINE");
    // HF_TOKEN, then the token file in HF_HOME; Token::Disabled sends neither.
    assert!(matches!(
        hub_error(UNet2DModel::from_pretrained("org/private", &LoadOptions::default())),
        HubError::RepoNotFound { .. }
    ));
    std::env::set_var("HF_TOKEN", "hf_secret");
    UNet2DModel::from_pretrained("org/private", &LoadOptions::default()).unwrap();
    std::env::remove_var("HF_TOKEN");
    std::fs::write(home.join("token"), "hf_secret\n").unwrap();
    let mut forced = LoadOptions::default();
    forced.hub.force_download = true;
    UNet2DModel::from_pretrained("org/private", &forced).unwrap();
    forced.hub.token = Token::Disabled;
    assert!(matches!(hub_error(UNet2DModel::from_pretrained("org/private", &forced)), HubError::RepoNotFound { .. }));
    std::fs::remove_dir_all(&home).unwrap();
}
