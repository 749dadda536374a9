//! `unet2d serve`: an HTTP front to `candle_unet2d::service::BatchingService`. The service does
//! the work (the queue, the batching, the sampling thread); this module only parses requests,
//! encodes images, logs, and starts and stops the server:
//!
//! * tokio runs the HTTP side on two threads; sampling runs on the service's own thread and rayon
//!   pool, so a long batch never holds up `/healthz` or `/metrics`.
//! * SIGTERM or Ctrl-C: the listener stops accepting, the service refuses new work and lets what is
//!   queued or running go on for `--shutdown-timeout` (then cancels it, answering 503), open
//!   connections are closed once answered, and the process exits 0.

#[path = "serve/api.rs"]
mod api;
#[path = "serve/encode.rs"]
mod encode;
#[path = "serve/errors.rs"]
mod errors;
#[path = "serve/http_metrics.rs"]
mod http_metrics;
#[path = "serve/routes.rs"]
mod routes;

use std::future::IntoFuture;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use candle_unet2d::device::parse_device;
use candle_unet2d::pipeline::PipelineKind;
use candle_unet2d::service::{BatchingService, ServiceModel, ServiceOptions};
use candle_unet2d::LoadOptions;

use super::cli::ServeArgs;
use super::model;

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log)?;
    let device =
        parse_device(&args.compute.device).with_context(|| format!("cannot use --device {}", args.compute.device))?;
    let options = LoadOptions { device, dtype: args.compute.dtype.dtype(), ..LoadOptions::default() };
    let loaded = model::load(&args.model, &options)?;
    let pipeline = PipelineKind::for_folder(loaded.pipeline_class.as_deref(), loaded.scheduler.kind())
        .with_context(|| format!("{}'s model_index.json names a pipeline unet2d does not have", loaded.name))?;
    let service_model = ServiceModel::new(Arc::new(loaded.unet), loaded.scheduler, pipeline);
    let request_timeout = (!args.request_timeout.is_zero()).then_some(args.request_timeout);
    let service_options = ServiceOptions {
        max_batch: args.max_batch,
        max_queue: args.max_queue,
        max_images_per_request: args.max_images,
        max_steps: args.max_steps,
        request_timeout,
        batch_wait: args.batch_wait,
        threads: args.threads,
        ..ServiceOptions::default()
    };
    let service = BatchingService::new(service_model, service_options)
        .with_context(|| format!("cannot serve {}", loaded.name))?;
    let app = Arc::new(routes::App::new(service, request_timeout, args.max_body));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("unet2d-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(app.clone(), &args, &loaded.name))?;
    // Handlers are done; the sampling thread has at most the rest of the grace period left.
    app.service.shutdown(args.shutdown_timeout);
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

async fn serve(app: Arc<routes::App>, args: &ServeArgs, name: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr().context("cannot read the bound address")?;
    // The one line on stdout: scripts and tests read the port from it (--port 0 picks a free one).
    println!("listening on http://{address}");
    let _ = std::io::stdout().flush();
    tracing::info!(%address, model = name, max_batch = args.max_batch, max_queue = args.max_queue, "serving");
    let grace = args.shutdown_timeout;
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let stopping = {
        let app = app.clone();
        async move {
            let signal = shutdown_signal().await;
            tracing::info!(signal, grace_s = grace.as_secs_f64(), "shutting down");
            app.service.begin_shutdown(grace);
            let _ = signalled_tx.send(());
        }
    };
    let server = axum::serve(listener, routes::router(app)).with_graceful_shutdown(stopping).into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("the server failed"),
        Ok(()) = signalled_rx => {}
    }
    // After the signal, bound the wait for open connections: the grace period plus a margin for the
    // last step and the answers (a client that never reads its answer must not keep the process up).
    match tokio::time::timeout(grace + Duration::from_secs(5), &mut server).await {
        Ok(result) => result.context("the server failed"),
        Err(_) => {
            tracing::warn!("connections still open after the shutdown bound; closing them");
            Ok(())
        }
    }
}

/// Waits for SIGTERM or Ctrl-C and names it.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "SIGINT",
        () = term => "SIGTERM",
    }
}

/// Structured logs on stderr, filtered by `--log` (an env-filter directive such as `info` or
/// `warn,unet2d=debug`), or by `RUST_LOG` when it is set.
fn init_logging(filter: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(&env).with_context(|| format!("bad RUST_LOG {env:?}"))?,
        _ => EnvFilter::try_new(filter).with_context(|| format!("bad --log {filter:?}"))?,
    };
    // try_init: inside the Python extension the command may run twice in one process.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    Ok(())
}
