// A small pool of worker_threads for the JS backend's async calls. Workers are created on demand,
// kept for reuse, and unref'ed while idle so that the pool never keeps a process alive; a busy
// worker is ref'ed so that a process awaiting a result does not exit under it.
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { WorkerReply, WorkerRequest } from './protocol';

// The compiled file next to this one (dist/js/worker.js): workers load plain JS, not TypeScript.
const WORKER_SCRIPT = path.join(__dirname, 'worker.js');

interface Job {
  request: WorkerRequest;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class WorkerPool {
  readonly size: number;
  private readonly workers = new Set<Worker>();
  private readonly idle: Worker[] = [];
  private readonly running = new Map<Worker, Job>();
  private readonly queue: Job[] = [];

  constructor(size: number) {
    this.size = Math.max(1, size);
  }

  run(request: WorkerRequest): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ request, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      const worker = this.idle.pop() ?? (this.workers.size < this.size ? this.spawn() : undefined);
      if (worker === undefined) return;
      const job = this.queue.shift() as Job;
      this.running.set(worker, job);
      worker.ref();
      worker.postMessage(job.request);
    }
  }

  private spawn(): Worker {
    const worker = new Worker(WORKER_SCRIPT);
    this.workers.add(worker);
    worker.on('message', (reply: WorkerReply) => this.finish(worker, reply));
    worker.on('error', (error) => this.retire(worker, error));
    worker.on('exit', (code) => this.retire(worker, new Error(`a JS attention worker exited with code ${code}`)));
    return worker;
  }

  private finish(worker: Worker, reply: WorkerReply): void {
    const job = this.running.get(worker);
    this.running.delete(worker);
    worker.unref();
    this.idle.push(worker);
    if (job !== undefined) {
      if (reply.ok) job.resolve();
      else job.reject(new Error(`the JS attention worker failed: ${reply.message}`));
    }
    this.dispatch();
  }

  /** A worker that errored or exited is dropped; its job, if any, fails; queued jobs go elsewhere. */
  private retire(worker: Worker, error: Error): void {
    if (!this.workers.delete(worker)) return;
    const idleIndex = this.idle.indexOf(worker);
    if (idleIndex >= 0) this.idle.splice(idleIndex, 1);
    const job = this.running.get(worker);
    this.running.delete(worker);
    job?.reject(error);
    void worker.terminate();
    this.dispatch();
  }
}
