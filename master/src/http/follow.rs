//! `GET /api/v1/jobs/{id}/tasks/{task_id}/logs/follow`: an attempt's log as server-sent
//! events, from its first line until the attempt ends.
//!
//! The stream subscribes to the log collector's live ring before it reads the file, so
//! nothing written in between is missed. Chunks are matched to the file by their end
//! offset: a chunk already read is skipped, and a gap (a chunk lost because this follower
//! was slow) is filled by reading the file again. A slow follower therefore costs no
//! memory and still sees every line exactly once.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use bytes::Bytes;
use furrow_protocol::{JobId, TaskRef};
use tokio::sync::broadcast::{self, error::RecvError};

use super::HttpError;
use super::api::{Query, log_target};
use crate::auth::Caller;
use crate::logs::LiveChunk;
use crate::service::Service;

/// Largest piece of the file read at once while catching up.
const READ_CHUNK: usize = 256 * 1024;

/// A comment line is sent this often on an idle stream, so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

struct Follow {
    service: Service,
    caller: Caller,
    job_id: JobId,
    task: TaskRef,
    offset: u64,
    live: broadcast::Receiver<LiveChunk>,
    pending: VecDeque<Bytes>,
    catch_up: bool,
    end_after_catch_up: bool,
    finished: bool,
}

fn log_event(text: &str) -> Bytes {
    let mut event = String::with_capacity(text.len() + 32);
    event.push_str("event: log\n");
    for line in text.lines() {
        event.push_str("data: ");
        event.push_str(line);
        event.push('\n');
    }
    event.push('\n');
    Bytes::from(event)
}

impl Follow {
    /// Reads one piece of the file from the current offset and queues it. Returns whether
    /// the reader has caught up with the end of the file (or failed); one piece at a time,
    /// so a long log streams out without being held in memory.
    async fn read_piece(&mut self) -> bool {
        let read = self
            .service
            .read_log(
                &self.caller,
                self.job_id,
                self.task.task_id,
                Some(self.task.attempt),
                self.offset,
                READ_CHUNK,
            )
            .await;
        let chunk = match read {
            Ok(chunk) => chunk,
            Err(e) => {
                let data = serde_json::json!({ "error": e.message }).to_string();
                self.pending
                    .push_back(Bytes::from(format!("event: error\ndata: {data}\n\n")));
                self.finished = true;
                return true;
            }
        };
        if !chunk.text.is_empty() {
            self.pending.push_back(log_event(&chunk.text));
        }
        let moved = chunk.next_offset > self.offset;
        self.offset = chunk.next_offset;
        if chunk.complete && !moved {
            self.end_after_catch_up = true;
        }
        !moved
    }

    fn end(&mut self) {
        let data = serde_json::json!({ "attempt": self.task.attempt, "size": self.offset });
        self.pending
            .push_back(Bytes::from(format!("event: end\ndata: {data}\n\n")));
        self.finished = true;
    }

    async fn next_event(&mut self) -> Option<Bytes> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            if self.catch_up {
                let caught_up = self.read_piece().await;
                if caught_up {
                    self.catch_up = false;
                    if self.end_after_catch_up && !self.finished {
                        self.end();
                    }
                }
                continue;
            }
            match tokio::time::timeout(KEEPALIVE, self.live.recv()).await {
                Err(_) => return Some(Bytes::from_static(b": keepalive\n\n")),
                Ok(Err(RecvError::Lagged(_))) => self.catch_up = true,
                Ok(Err(RecvError::Closed)) => self.finished = true,
                Ok(Ok(chunk)) if chunk.task == self.task => {
                    let start = chunk.end_offset.saturating_sub(chunk.text.len() as u64);
                    if chunk.closed {
                        self.catch_up = true;
                        self.end_after_catch_up = true;
                    } else if chunk.end_offset <= self.offset {
                        // Already read from the file.
                    } else if start == self.offset {
                        self.offset = chunk.end_offset;
                        return Some(log_event(&chunk.text));
                    } else {
                        self.catch_up = true;
                    }
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// The handler. `?attempt=N` follows another attempt than the current one.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/tasks/{task_id}/logs/follow", tag = "tasks",
    params(("id" = i64, Path, description = "Job id"), ("task_id" = i64, Path, description = "Task id"),
           ("attempt" = Option<u32>, Query, description = "Attempt (default: the current one)")),
    responses((status = 200, description = "Server-sent events: `log` with each new line, `end` when the attempt is over", content_type = "text/event-stream", body = String),
              (status = 404, description = "Unknown task or attempt", body = super::openapi::ErrorBody)))]
pub async fn follow_log(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: Query,
) -> Result<HttpResponse, HttpError> {
    let (job_id, task_id, attempt) = log_target(path, &query)?;
    let service = service.get_ref().clone();
    let live = service.subscribe_logs();
    // Answers 404 for an unknown task or attempt, and 403 for a job the caller may not
    // read, before the stream starts.
    let first = service
        .read_log(&caller, job_id, task_id, attempt, 0, 0)
        .await?;
    let follow = Follow {
        service,
        caller,
        job_id,
        task: TaskRef {
            task_id,
            attempt: first.attempt,
        },
        offset: 0,
        live,
        pending: VecDeque::new(),
        catch_up: true,
        end_after_catch_up: false,
        finished: false,
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next_event().await?;
        Some((Ok::<_, Infallible>(event), follow))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}
