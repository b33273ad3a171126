// Entry point of a JS-backend worker thread: runs a range of work units and says when it is done.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parentPort } from 'node:worker_threads';
import { runAttention } from './kernel';
import type { WorkerRequest, WorkerReply } from './protocol';

const port = parentPort;
if (port === null) throw new Error('lib/js/worker is a worker_threads entry point, not a module to import');

// The point of the async functions is an event loop that keeps ticking. On a busy machine (say two
// cores, two workers and a compiler) an equal-priority event-loop thread can wait tens of
// milliseconds for a core, so the compute threads step back a little and the event loop wins.
const NICENESS_STEP = 10;

function lowerThisThreadsPriority(): void {
  // Linux alone lets setpriority() address one thread, by its id, read from /proc/thread-self.
  if (process.platform !== 'linux') return;
  try {
    const threadId = Number(path.basename(fs.readlinkSync('/proc/thread-self')));
    if (!Number.isSafeInteger(threadId) || threadId <= 0) return;
    os.setPriority(threadId, Math.min(19, os.getPriority(threadId) + NICENESS_STEP));
  } catch {
    // Best effort: a sandbox may hide /proc or refuse; the results are the same either way.
  }
}

lowerThisThreadsPriority();

port.on('message', (request: WorkerRequest) => {
  let reply: WorkerReply;
  try {
    runAttention(request.problem, request.buffers, request.firstUnit, request.endUnit);
    reply = { ok: true };
  } catch (error) {
    reply = { ok: false, message: error instanceof Error ? (error.stack ?? error.message) : String(error) };
  }
  port.postMessage(reply);
});
