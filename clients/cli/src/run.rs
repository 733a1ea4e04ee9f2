//! `agentwire run --channel C … -- COMMAND ARGS…`: a command wrapped in an
//! AG-UI run (docs/agui.md). It publishes `RUN_STARTED`, the command's
//! stdout and stderr as two output streams (coalesced, ANSI kept, also
//! copied to agentwire's own stdout and stderr), `agentwire.progress`
//! events derived from its output (`--progress-regex`), and `RUN_FINISHED`
//! or `RUN_ERROR`; it forwards signals to the command and exits with its
//! status.
//!
//! The command is never slowed: readers copy its output as fast as it
//! comes into a bounded backlog, and one publisher task takes what is due
//! from it (what arrived while a publish was under way goes as the next,
//! larger events). When the gateway cannot be reached the publisher says
//! so once, retries with backoff, and drops the oldest output past the
//! backlog bound (a marker in the stream says how much); a refusal (bad
//! token, forbidden channel) stops publishing, never the command.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agentwire_core::ports::StoreError;
use agentwire_core::stream::DEFAULT_MAX_BYTES;
use agentwire_core::usecases::PublishError;
use agentwire_protocol::agui::{self, AgUiEvent};
use agentwire_protocol::chunks::escaped_prefix;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use agentwire_client::Backoff;

use crate::error::CliError;
use crate::publish::{Outgoing, Sink, Target, take_text};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// The channel of the run (one agent; the AG-UI threadId by default).
    #[arg(long)]
    channel: String,
    /// The run's id (default: a new UUID). Its events' idempotency keys
    /// derive from it, so a run id is for one run.
    #[arg(long)]
    run_id: Option<String>,
    /// The AG-UI threadId (default: the channel).
    #[arg(long)]
    thread_id: Option<String>,
    /// A regular expression matched against each line of output (ANSI
    /// escapes removed; `\r` ends a line too, as progress bars redraw with
    /// it), with named groups `done` (required), `total` and `label`: each
    /// match is an `agentwire.progress` event, e.g.
    /// '(?P<done>\d+)/(?P<total>\d+) files'.
    #[arg(long, value_parser = progress_regex)]
    progress_regex: Option<regex_lite::Regex>,
    /// The coalescing window: output, and progress, is published at most
    /// this often per stream.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Unpublished output kept per stream while the gateway is slow or
    /// unreachable; past it the oldest is dropped (and the stream says so).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_backlog: usize,
    /// After the command exits, how long publishing what is left may take.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// No lines of agentwire's own on stderr but warnings.
    #[arg(long, short)]
    quiet: bool,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn progress_regex(s: &str) -> Result<regex_lite::Regex, String> {
    let re = regex_lite::Regex::new(s).map_err(|e| e.to_string())?;
    if !re.capture_names().any(|n| n == Some("done")) {
        return Err("it needs a named group `done`, e.g. (?P<done>\\d+)/(?P<total>\\d+)".into());
    }
    Ok(re)
}

/// The most text of one output event, as JSON (ANSI escapes cost 6 bytes
/// each), as the streams' coalescer bounds it.
const EVENT_ESCAPED_BYTES: usize = DEFAULT_MAX_BYTES;
/// The longest line kept for progress matching.
const PROGRESS_LINE_BYTES: usize = 4 * 1024;
/// Retry backoff bounds while the gateway is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the readers may go on after the command exits (a background
/// process it started may hold its output open).
const READERS_AFTER_EXIT: Duration = Duration::from_secs(2);
/// Events per publish call.
const BATCH: usize = 10;

/// One of the command's outputs: its unpublished text and stream state.
struct Output {
    kind: &'static str,
    stream: String,
    carry: Vec<u8>,
    text: String,
    /// When the oldest unpublished text arrived.
    since: Option<Instant>,
    index: u64,
    /// Bytes dropped since the last event (the backlog was full).
    dropped: usize,
    dropped_total: usize,
    bytes: usize,
    line: String,
    end_sent: bool,
}

impl Output {
    fn new(kind: &'static str, run_id: &str) -> Self {
        Self {
            kind,
            stream: format!("{run_id}.{kind}"),
            carry: Vec::new(),
            text: String::new(),
            since: None,
            index: 0,
            dropped: 0,
            dropped_total: 0,
            bytes: 0,
            line: String::new(),
            end_sent: false,
        }
    }

    /// Takes bytes the command wrote; returns the lines they completed
    /// when `lines` (progress is matched on them).
    fn push(&mut self, bytes: &[u8], max_backlog: usize, now: Instant, lines: bool) -> Vec<String> {
        self.bytes += bytes.len();
        self.carry.extend_from_slice(bytes);
        let text = take_text(&mut self.carry);
        let mut done = Vec::new();
        for c in text.chars().filter(|_| lines) {
            if c == '\n' || c == '\r' {
                if !self.line.is_empty() {
                    done.push(std::mem::take(&mut self.line));
                }
            } else if self.line.len() < PROGRESS_LINE_BYTES {
                self.line.push(c);
            }
        }
        if !text.is_empty() {
            self.since.get_or_insert(now);
            self.text.push_str(&text);
        }
        if self.text.len() > max_backlog {
            // Down to three quarters of the bound, so that a command that
            // keeps writing drops in a few large cuts, not one per read.
            let mut cut = self.text.len() - max_backlog / 4 * 3;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.dropped += cut;
            self.dropped_total += cut;
        }
        done
    }

    /// Due: the window passed since its oldest text, it fills an event, or
    /// the run is closing.
    fn due(&self, now: Instant, window: Duration, closing: bool) -> bool {
        !self.text.is_empty()
            && (closing
                || self.text.len() >= EVENT_ESCAPED_BYTES
                || self.since.is_some_and(|t| now >= t + window))
    }

    /// The next event of the stream: up to one event's worth of its text.
    fn take_event(&mut self) -> Outgoing {
        let cut = escaped_prefix(&self.text, EVENT_ESCAPED_BYTES);
        let mut text: String = self.text.drain(..cut).collect();
        if self.dropped > 0 {
            text = format!(
                "\r\n\x1b[0m[agentwire run: {} bytes of output were not published: publishing fell behind]\r\n{text}",
                self.dropped
            );
            self.dropped = 0;
        }
        if self.text.is_empty() {
            self.since = None;
        }
        self.event(json!({"stream": self.stream, "index": self.index, "text": text}))
    }

    /// Its text as events into `out`, while the batch has room.
    fn take_all(&mut self, out: &mut Vec<Outgoing>) {
        while out.len() < BATCH && !self.text.is_empty() {
            out.push(self.take_event());
        }
    }

    fn end(&mut self) -> Outgoing {
        self.end_sent = true;
        self.event(json!({"stream": self.stream, "index": self.index, "end": true}))
    }

    fn event(&mut self, data: Value) -> Outgoing {
        let out = Outgoing {
            kind: self.kind.to_owned(),
            id: format!("{}:{}", self.stream, self.index),
            data,
        };
        self.index += 1;
        out
    }
}

/// An AG-UI event as one event of a batch, under its idempotency key.
fn outgoing(event: AgUiEvent, id: String) -> Outgoing {
    Outgoing {
        kind: event.kind.to_owned(),
        id,
        data: event.data,
    }
}

/// What the readers, the command's end and the publisher share.
struct State {
    outputs: [Output; 2],
    /// Lifecycle events to send first (`RUN_STARTED`).
    head: VecDeque<Outgoing>,
    /// The latest progress not yet sent, and the output that told it.
    progress: Option<(AgUiEvent, usize)>,
    progress_sent: Option<Instant>,
    progress_n: u64,
    /// The closing event, set once the command ended and its output was read.
    last: Option<Outgoing>,
    closing: bool,
    /// When the command ended (the drain deadline counts from it).
    ended_at: Option<Instant>,
}

impl State {
    /// A run's state before anything happened: nothing to send.
    fn new(run_id: &str) -> Self {
        Self {
            outputs: [Output::new("stdout", run_id), Output::new("stderr", run_id)],
            head: VecDeque::new(),
            progress: None,
            progress_sent: None,
            progress_n: 0,
            last: None,
            closing: false,
            ended_at: None,
        }
    }

    /// What is due now, in order, at most [`BATCH`]; `true` once the
    /// closing event is in it (nothing more will come).
    fn take_due(&mut self, run_id: &str, now: Instant, window: Duration) -> (Vec<Outgoing>, bool) {
        let mut out = Vec::new();
        while out.len() < BATCH {
            match self.head.pop_front() {
                Some(e) => out.push(e),
                None => break,
            }
        }
        let closing = self.closing;
        for o in &mut self.outputs {
            if o.due(now, window, closing) {
                o.take_all(&mut out);
            }
        }
        let progress_due = closing || self.progress_sent.is_none_or(|t| now >= t + window);
        if let (true, Some(which)) = (progress_due, self.progress.as_ref().map(|p| p.1)) {
            // After the output that told it.
            self.outputs[which].take_all(&mut out);
        }
        let told = self
            .progress
            .as_ref()
            .is_some_and(|p| self.outputs[p.1].text.is_empty());
        if out.len() < BATCH
            && progress_due
            && told
            && let Some((p, _)) = self.progress.take()
        {
            out.push(outgoing(
                p,
                format!("{run_id}:progress:{}", self.progress_n),
            ));
            self.progress_n += 1;
            self.progress_sent = Some(now);
        }
        if !closing {
            return (out, false);
        }
        for o in &mut self.outputs {
            if out.len() < BATCH && o.text.is_empty() && o.index > 0 && !o.end_sent {
                out.push(o.end());
            }
        }
        let drained = self.head.is_empty()
            && self.progress.is_none()
            && self
                .outputs
                .iter()
                .all(|o| o.text.is_empty() && (o.index == 0 || o.end_sent));
        if drained
            && out.len() < BATCH
            && let Some(last) = self.last.take()
        {
            out.push(last);
            return (out, true);
        }
        (out, false)
    }

    /// Gives up the unpublished output: each stream's text is dropped and
    /// one event in its place says how much. The bytes given up.
    fn abandon(&mut self) -> usize {
        let mut given_up = 0;
        let mut markers = Vec::new();
        for o in &mut self.outputs {
            if o.text.is_empty() {
                continue;
            }
            given_up += o.text.len();
            o.dropped += o.text.len();
            o.dropped_total += o.text.len();
            o.text.clear();
            markers.push(o.take_event());
        }
        for m in markers.into_iter().rev() {
            self.head.push_front(m);
        }
        given_up
    }

    /// When something becomes due without new input.
    fn next_deadline(&self, window: Duration) -> Option<Instant> {
        let text = self
            .outputs
            .iter()
            .filter_map(|o| o.since.map(|t| t + window));
        let progress = self
            .progress
            .as_ref()
            .and(self.progress_sent.map(|t| t + window));
        text.chain(progress).min()
    }
}

/// The shared state and a bell rung when it changes.
struct Shared {
    state: Mutex<State>,
    bell: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it cannot leave the state half-changed in a
        // way that matters more than losing the run's output.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub async fn run(args: Args) -> Result<std::process::ExitCode, CliError> {
    agentwire_protocol::limits::validate_channel(&args.channel)?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if run_id.is_empty() || run_id.len() > 64 {
        return Err("--run-id must be 1 to 64 characters".into());
    }
    let thread_id = args
        .thread_id
        .clone()
        .unwrap_or_else(|| args.channel.clone());
    let program = args
        .command
        .first()
        .ok_or("give the command after --")?
        .clone();
    let name = std::path::Path::new(&program)
        .file_name()
        .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());

    let mut state = State::new(&run_id);
    state.head.push_back(outgoing(
        agui::run_started(&thread_id, &run_id),
        format!("{run_id}:started"),
    ));
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        bell: Notify::new(),
    });
    if !args.quiet {
        eprintln!(
            "agentwire run: run {run_id} on channel {} ({})",
            args.channel,
            args.target.describe()
        );
    }
    let publisher = tokio::spawn(publish(
        args.target.clone(),
        args.channel.clone(),
        run_id.clone(),
        args.window,
        args.drain_timeout,
        shared.clone(),
    ));

    let began = Instant::now();
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&args.command[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group: a signal agentwire gets reaches the command
    // (and what it started) once, forwarded, not twice.
    #[cfg(unix)]
    command.process_group(0);
    let status = match command.spawn() {
        Ok(mut child) => {
            let reader = |which: usize, from: Option<Box<dyn AsyncRead + Send + Unpin>>| {
                let to: Box<dyn AsyncWrite + Send + Unpin> = match which {
                    0 => Box::new(tokio::io::stdout()),
                    _ => Box::new(tokio::io::stderr()),
                };
                let (shared, regex) = (shared.clone(), args.progress_regex.clone());
                from.map(|r| tokio::spawn(read(r, to, which, shared, args.max_backlog, regex)))
            };
            let readers = [
                reader(0, child.stdout.take().map(|r| Box::new(r) as _)),
                reader(1, child.stderr.take().map(|r| Box::new(r) as _)),
            ];
            let status = wait_forwarding_signals(&mut child).await?;
            for reader in readers.into_iter().flatten() {
                let abort = reader.abort_handle();
                if tokio::time::timeout(READERS_AFTER_EXIT, reader)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            }
            Ok(status)
        }
        Err(e) => Err(e),
    };
    let took = began.elapsed();
    let (last, code) = match &status {
        Ok(status) => closing_event(&thread_id, &run_id, &name, *status, took),
        Err(e) => {
            eprintln!("agentwire run: cannot start {program}: {e}");
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            (
                agui::run_error(&format!("cannot start {name}: {e}"), Some("spawn")),
                code,
            )
        }
    };
    {
        let mut state = shared.lock();
        state.last = Some(outgoing(last, format!("{run_id}:end")));
        state.closing = true;
        state.ended_at = Some(Instant::now());
    }
    shared.bell.notify_one();
    let report = publisher
        .await
        .map_err(|e| CliError::Usage(format!("the publisher stopped: {e}")))?;
    let state = shared.lock();
    let dropped: usize = state.outputs.iter().map(|o| o.dropped_total).sum();
    let bytes: usize = state.outputs.iter().map(|o| o.bytes).sum();
    match report {
        Published::All(events) if !args.quiet => eprintln!(
            "agentwire run: published {events} events ({bytes} bytes of output{}) for run {run_id}",
            if dropped > 0 {
                format!(", {dropped} dropped while publishing fell behind")
            } else {
                String::new()
            }
        ),
        Published::All(_) => {}
        Published::Stopped { events, why } => eprintln!(
            "agentwire run: published {events} events of run {run_id}, then stopped: {why}"
        ),
    }
    Ok(std::process::ExitCode::from(code))
}

/// `RUN_FINISHED` for exit 0, else `RUN_ERROR`; and agentwire's exit code.
fn closing_event(
    thread_id: &str,
    run_id: &str,
    name: &str,
    status: ExitStatus,
    took: Duration,
) -> (AgUiEvent, u8) {
    let secs = format!("{:.1} s", took.as_secs_f64());
    let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    if let Some(code) = status.code() {
        if code == 0 {
            return (
                agui::run_finished(
                    thread_id,
                    run_id,
                    Some(json!({"exitCode": 0, "durationMs": ms})),
                ),
                0,
            );
        }
        return (
            agui::run_error(
                &format!("{name} exited with status {code} after {secs}"),
                Some(&format!("exit:{code}")),
            ),
            u8::try_from(code & 0xff).unwrap_or(1),
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let signame = nix::sys::signal::Signal::try_from(sig)
                .map_or_else(|_| format!("SIG{sig}"), |s| s.as_str().to_owned());
            return (
                agui::run_error(
                    &format!("{name} was killed by {signame} after {secs}"),
                    Some(&format!("signal:{signame}")),
                ),
                u8::try_from(128 + sig).unwrap_or(1),
            );
        }
    }
    (
        agui::run_error(&format!("{name} ended after {secs}"), Some("unknown")),
        1,
    )
}

/// Copies the command's output to agentwire's own and into the backlog.
async fn read(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    which: usize,
    shared: Arc<Shared>,
    max_backlog: usize,
    progress: Option<regex_lite::Regex>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut echo = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A closed stdout of ours (`| head`) must not stop the command's.
        if echo && (to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err()) {
            echo = false;
        }
        let mut state = shared.lock();
        let lines =
            state.outputs[which].push(&buf[..n], max_backlog, Instant::now(), progress.is_some());
        if let Some(re) = &progress {
            for line in lines.iter().rev() {
                if let Some(p) = progress_of(re, line) {
                    state.progress = Some((p, which));
                    break;
                }
            }
        }
        drop(state);
        shared.bell.notify_one();
    }
}

/// The progress a line of output tells, if it matches.
fn progress_of(re: &regex_lite::Regex, line: &str) -> Option<AgUiEvent> {
    let plain = strip_ansi(line);
    let caps = re.captures(&plain)?;
    let done: f64 = caps.name("done")?.as_str().trim().parse().ok()?;
    let total = caps
        .name("total")
        .and_then(|t| t.as_str().trim().parse::<f64>().ok());
    let label = caps
        .name("label")
        .map_or_else(|| plain.trim().to_owned(), |l| l.as_str().trim().to_owned());
    let label: String = label.chars().take(200).collect();
    Some(agui::progress(done, total, Some(&label)))
}

/// The text of a line without ANSI escape sequences (CSI, OSC and
/// two-byte escapes).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            if !c.is_control() || c == '\t' {
                out.push(c);
            }
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Waits for the command, forwarding the signals agentwire receives.
async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
) -> Result<ExitStatus, std::io::Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        let kinds = [
            (SignalKind::interrupt(), nix::sys::signal::Signal::SIGINT),
            (SignalKind::terminate(), nix::sys::signal::Signal::SIGTERM),
            (SignalKind::hangup(), nix::sys::signal::Signal::SIGHUP),
            (SignalKind::quit(), nix::sys::signal::Signal::SIGQUIT),
            (
                SignalKind::user_defined1(),
                nix::sys::signal::Signal::SIGUSR1,
            ),
            (
                SignalKind::user_defined2(),
                nix::sys::signal::Signal::SIGUSR2,
            ),
        ];
        let mut streams = Vec::new();
        for (kind, sig) in kinds {
            streams.push((signal(kind)?, sig));
        }
        let forward = async {
            let mut next = futures::future::select_all(
                streams
                    .iter_mut()
                    .map(|(s, sig)| Box::pin(async move { s.recv().await.map(|()| *sig) })),
            );
            loop {
                let (got, _, rest) = next.await;
                if let (Some(sig), Some(pid)) = (got, pid) {
                    // The command's process group: it and what it started.
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
                }
                if rest.is_empty() {
                    return std::future::pending::<()>().await;
                }
                next = futures::future::select_all(rest);
            }
        };
        tokio::select! {
            status = child.wait() => status,
            () = forward => child.wait().await,
        }
    }
    #[cfg(not(unix))]
    {
        child.wait().await
    }
}

/// How publishing ended.
enum Published {
    All(usize),
    Stopped { events: usize, why: String },
}

/// The publisher task: sends what is due, in order, until the closing
/// event is sent, publishing is refused, or the drain deadline passes.
async fn publish(
    target: Target,
    channel: String,
    run_id: String,
    window: Duration,
    drain_timeout: Duration,
    shared: Arc<Shared>,
) -> Published {
    let mut events = 0usize;
    let mut trouble = Trouble::new(target.describe(), drain_timeout, shared.clone());
    let sink = match trouble
        .retry(events, || Sink::open(&target, &channel))
        .await
    {
        Ok(sink) => sink,
        Err(stopped) => return stopped,
    };
    let mut abandoned = false;
    loop {
        let (batch, last) = {
            let mut state = shared.lock();
            // Past the drain deadline the rest of the output is given up
            // (the streams say how much) so the run still ends for its
            // subscribers.
            let late = state
                .ended_at
                .is_some_and(|t| Instant::now() >= t + drain_timeout);
            if late && !abandoned {
                abandoned = true;
                let given_up = state.abandon();
                if given_up > 0 {
                    eprintln!(
                        "agentwire run: --drain-timeout ({}) passed: {given_up} bytes of output were not published",
                        humantime::format_duration(drain_timeout)
                    );
                }
            }
            state.take_due(&run_id, Instant::now(), window)
        };
        if batch.is_empty() {
            let deadline = shared.lock().next_deadline(window);
            let notified = shared.bell.notified();
            match deadline {
                Some(d) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(d.into()) => {}
                    }
                }
                None => notified.await,
            }
            continue;
        }
        let n = batch.len();
        if let Err(stopped) = trouble
            .retry(events, || sink.batch(&channel, batch.clone()))
            .await
        {
            return stopped;
        }
        events += n;
        if last {
            return Published::All(events);
        }
    }
}

fn refused(events: usize, e: &CliError) -> Published {
    eprintln!(
        "{}\nagentwire run: publishing stops here; the command runs on",
        crate::error::report(e)
    );
    Published::Stopped {
        events,
        why: e.to_string(),
    }
}

/// Whether retrying may succeed: the gateway unreachable, throttling, a
/// server error, the queue unavailable. Refusals (a bad token, a forbidden
/// channel, an invalid event) are not.
fn transient(e: &CliError) -> bool {
    match e {
        CliError::Http { .. } => true,
        CliError::Refused { status, .. } => *status == 408 || *status == 429 || *status >= 500,
        CliError::Publish(PublishError::Queue(StoreError::Unavailable { .. }))
        | CliError::Store(StoreError::Unavailable { .. })
        | CliError::Queue {
            source: StoreError::Unavailable { .. },
            ..
        } => true,
        _ => false,
    }
}

/// The publisher's failures in a row: said once, retried on the client's
/// backoff schedule (no jitter: one publisher), until the drain deadline.
struct Trouble {
    /// Where the events go, for messages.
    target: String,
    drain_timeout: Duration,
    shared: Arc<Shared>,
    backoff: Backoff,
    failing: bool,
}

impl Trouble {
    fn new(target: String, drain_timeout: Duration, shared: Arc<Shared>) -> Self {
        Self {
            target,
            drain_timeout,
            shared,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX).with_jitter(0.0),
            failing: false,
        }
    }

    /// `op` until it succeeds: a transient failure is said once and tried
    /// again after the backoff; a refusal, or the drain deadline passing,
    /// stops publishing (`Err`, with how it ended).
    async fn retry<T, F, Fut>(&mut self, events: usize, mut op: F) -> Result<T, Published>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CliError>>,
    {
        loop {
            match op().await {
                Ok(v) => {
                    if std::mem::take(&mut self.failing) {
                        self.backoff.reset();
                        eprintln!("agentwire run: publishing again");
                    }
                    return Ok(v);
                }
                Err(e) if transient(&e) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        eprintln!(
                            "agentwire run: cannot publish to {} ({e}); the command runs on, its output is kept (bounded) and publishing is retried",
                            self.target
                        );
                    }
                    if let Some(why) = self.wait().await {
                        return Err(Published::Stopped { events, why });
                    }
                }
                Err(e) => return Err(refused(events, &e)),
            }
        }
    }

    /// Waits out the backoff; `Some(why)` when the drain deadline passed
    /// (the command has ended and publishing must stop).
    async fn wait(&mut self) -> Option<String> {
        let pause = self.backoff.next_delay(0.0).unwrap_or(BACKOFF_MAX);
        let deadline = self.shared.lock().ended_at.map(|t| t + self.drain_timeout);
        match deadline {
            Some(d) if Instant::now() + pause >= d => {
                tokio::time::sleep_until(d.into()).await;
                Some(format!(
                    "the gateway could not be reached within --drain-timeout ({}) after the command ended",
                    humantime::format_duration(self.drain_timeout)
                ))
            }
            _ => {
                tokio::time::sleep(pause).await;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(run_id: &str) -> State {
        State::new(run_id)
    }

    #[test]
    fn output_within_the_window_waits_and_then_goes_as_one_event() {
        let t0 = Instant::now();
        let w = Duration::from_millis(50);
        let mut s = state("r");
        s.outputs[0].push(b"\x1b[32mok\x1b[0m ", 1 << 20, t0, true);
        s.outputs[0].push(b"line\n", 1 << 20, t0 + Duration::from_millis(10), true);
        assert!(
            s.take_due("r", t0 + Duration::from_millis(20), w)
                .0
                .is_empty()
        );
        let (due, last) = s.take_due("r", t0 + w, w);
        assert!(!last);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].kind.as_str(), due[0].id.as_str()),
            ("stdout", "r.stdout:0")
        );
        assert_eq!(
            due[0].data,
            json!({"stream": "r.stdout", "index": 0, "text": "\x1b[32mok\x1b[0m line\n"})
        );
    }

    #[test]
    fn a_full_backlog_drops_the_oldest_and_the_stream_says_how_much() {
        let t0 = Instant::now();
        let mut o = Output::new("stdout", "r");
        o.push(&[b'a'; 100], 64, t0, true);
        // Down to three quarters of the bound.
        assert_eq!((o.text.len(), o.dropped), (48, 52));
        let e = o.take_event();
        let text = e.data["text"].as_str().unwrap();
        assert!(
            text.contains("52 bytes of output were not published"),
            "{text}"
        );
        assert!(text.ends_with(&"a".repeat(48)));
    }

    #[test]
    fn an_event_holds_at_most_64_kib_of_escaped_text_and_splits_on_characters() {
        let mut o = Output::new("stdout", "r");
        // Escapes cost 6 bytes each in JSON; 'é' is 2 bytes of UTF-8.
        let input = "\x1bé".repeat(20_000);
        o.push(input.as_bytes(), 1 << 20, Instant::now(), true);
        let mut got = String::new();
        while !o.text.is_empty() {
            let e = o.take_event();
            let text = e.data["text"].as_str().unwrap().to_owned();
            assert!(
                text.chars()
                    .map(agentwire_protocol::chunks::escaped_len)
                    .sum::<usize>()
                    <= EVENT_ESCAPED_BYTES
            );
            got.push_str(&text);
        }
        assert_eq!(got, input);
    }

    #[test]
    fn closing_sends_the_rest_then_each_streams_end_then_the_closing_event() {
        let t0 = Instant::now();
        let w = Duration::from_millis(50);
        let mut s = state("r");
        s.outputs[1].push(b"warning\n", 1 << 20, t0, true);
        s.progress = Some((agui::progress(1.0, Some(2.0), None), 1));
        s.last = Some(Outgoing {
            kind: "RUN_FINISHED".into(),
            id: "r:end".into(),
            data: json!({}),
        });
        s.closing = true;
        let (due, last) = s.take_due("r", t0, w);
        assert!(last);
        let kinds: Vec<&str> = due.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["stderr", "CUSTOM", "stderr", "RUN_FINISHED"]);
        assert_eq!(
            due[2].data,
            json!({"stream": "r.stderr", "index": 1, "end": true})
        );
        assert_eq!(due[1].id, "r:progress:0");
    }

    #[test]
    fn progress_goes_after_the_output_that_told_it() {
        let t0 = Instant::now();
        let w = Duration::from_millis(50);
        let mut s = state("r");
        s.outputs[0].push(b"step 1/3\n", 1 << 20, t0, true);
        s.progress = Some((agui::progress(1.0, Some(3.0), None), 0));
        // Due at once (no progress sent yet), and the text it came from
        // goes before it even though its window has not passed.
        let (due, _) = s.take_due("r", t0, w);
        let kinds: Vec<&str> = due.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["stdout", "CUSTOM"]);
        // The next progress within the window waits for it.
        s.outputs[0].push(b"step 2/3\n", 1 << 20, t0 + Duration::from_millis(10), true);
        s.progress = Some((agui::progress(2.0, Some(3.0), None), 0));
        assert!(
            s.take_due("r", t0 + Duration::from_millis(20), w)
                .0
                .is_empty()
        );
        let (due, _) = s.take_due("r", t0 + w, w);
        assert_eq!(due.len(), 2);
        assert_eq!(due[1].data["value"]["done"], 2);
    }

    #[test]
    fn past_the_drain_deadline_the_rest_is_given_up_and_the_run_still_ends() {
        let t0 = Instant::now();
        let mut s = state("r");
        s.outputs[0].push(&[b'x'; 1000], 1 << 20, t0, false);
        s.last = Some(Outgoing {
            kind: "RUN_FINISHED".into(),
            id: "r:end".into(),
            data: json!({}),
        });
        s.closing = true;
        assert_eq!(s.abandon(), 1000);
        let (due, last) = s.take_due("r", t0, Duration::from_millis(50));
        assert!(last);
        let kinds: Vec<&str> = due.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["stdout", "stdout", "RUN_FINISHED"]);
        let text = due[0].data["text"].as_str().unwrap();
        assert!(
            text.contains("1000 bytes of output were not published"),
            "{text}"
        );
        assert!(!text.contains('x'));
        assert_eq!(due[1].data["end"], true);
    }

    #[test]
    fn progress_comes_from_the_line_without_its_escapes() {
        let re = progress_regex(r"(?P<done>\d+)/(?P<total>\d+)").unwrap();
        let p = progress_of(&re, "\x1b[1mAnalyzing code...\x1b[0m 3/10 files").unwrap();
        assert_eq!(
            p.data["value"],
            json!({"done": 3, "total": 10, "label": "Analyzing code... 3/10 files"})
        );
        assert!(progress_of(&re, "no numbers here").is_none());
        assert!(progress_regex(r"(\d+)/(\d+)").is_err());
    }

    #[test]
    fn carriage_returns_end_progress_lines_as_bars_redraw() {
        let mut o = Output::new("stdout", "r");
        let lines = o.push(b"1/3\r2/3\r3/", 1 << 20, Instant::now(), true);
        assert_eq!(lines, ["1/3", "2/3"]);
        assert_eq!(o.push(b"3\n", 1 << 20, Instant::now(), true), ["3/3"]);
    }

    #[test]
    fn refusals_stop_publishing_and_outages_are_retried() {
        assert!(transient(&CliError::Refused {
            status: 503,
            message: String::new()
        }));
        assert!(transient(&CliError::Refused {
            status: 429,
            message: String::new()
        }));
        assert!(!transient(&CliError::Refused {
            status: 403,
            message: String::new()
        }));
        assert!(!transient(&CliError::Usage("x".into())));
    }
}
