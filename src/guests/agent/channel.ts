// The host end of one guest agent's channel (protocol in PROTOCOL.md): JSON lines out, JSON lines in,
// one reply per request in order. Anything that is not a protocol line, a guest that goes away, or a
// deadline ends the channel with a reason that names the guest, so no caller waits forever. It runs over
// any pair of byte streams: a VM's UART socket, a container's attached stdin/stdout, a child's pipes.
import type { Readable, Writable } from 'node:stream';
import { PermanentError } from '../../errors.ts';

export const PROTOCOL_VERSION = 1;

export interface AgentMessage {
  v: number;
  op: string;
  id?: number;
  message?: string;
  seconds?: number;
  exit?: number;
  output?: string;
  readBack?: Record<string, number>;
  [k: string]: unknown;
}

/** The channel itself failed: garbage, another protocol version, a lost guest, a deadline. */
export class AgentError extends Error {}
/**
 * The agent itself answered with an error (a failing command, a refused path): retrying repeats it, so it
 * is permanent for every driver alike.
 */
export class AgentReplyError extends PermanentError {}

const MAX_LINE = 1 << 20;

export class AgentChannel {
  private buf = '';
  private nextId = 1;
  private pending = new Map<number, { resolve: (m: AgentMessage) => void; reject: (e: Error) => void }>();
  private readyWaiters: { resolve: (m: AgentMessage) => void; reject: (e: Error) => void }[] = [];
  private readyMsg?: AgentMessage;
  private failure?: Error;
  /** Requests given up by their caller (cancel): their late replies are dropped, not taken for garbage. */
  private abandoned = new Set<number>();

  constructor(
    readonly name: string,
    private input: Readable,
    private output: Writable,
    /** Called when the stream ends, to find a better reason (a guest process that exited) before failing. */
    onEnd?: () => Promise<Error | undefined>,
  ) {
    input.setEncoding('utf8');
    input.on('data', (chunk: string) => this.onData(chunk));
    input.on('end', () => {
      const closed = new AgentError(`${name}: the agent channel closed`);
      if (!onEnd) return this.fail(closed);
      onEnd().then((e) => this.fail(e ?? closed), () => this.fail(closed));
    });
    input.on('error', (e: Error) => this.fail(new AgentError(`${name}: the agent channel failed: ${e.message}`)));
    output.on('error', (e: Error) => this.fail(new AgentError(`${name}: the agent channel failed: ${e.message}`)));
  }

  get ready(): AgentMessage | undefined {
    return this.readyMsg;
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  /** Is the agent still working on a request (answered or abandoned by the caller)? */
  get busy(): boolean {
    return this.pending.size + this.abandoned.size > 0;
  }

  private onData(chunk: string): void {
    if (this.failure) return;
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      // A UART may deliver a stray NUL or CR around a line; they are never part of a message.
      const line = this.buf.slice(0, nl).replace(/^[\0\r\s]+|[\0\r\s]+$/g, '');
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onLine(line);
      if (this.failure) return;
    }
    if (this.buf.length > MAX_LINE) this.fail(new AgentError(`${this.name}: the agent sent a line over ${MAX_LINE} bytes`));
  }

  private onLine(line: string): void {
    let m: AgentMessage;
    try {
      m = JSON.parse(line) as AgentMessage;
    } catch {
      return this.fail(new AgentError(`${this.name}: the agent channel carried something that is not the agent protocol: ${JSON.stringify(line.slice(0, 120))}`));
    }
    if (!m || typeof m !== 'object' || typeof m.op !== 'string') {
      return this.fail(new AgentError(`${this.name}: the agent sent a line that is not a protocol message: ${JSON.stringify(line.slice(0, 120))}`));
    }
    if (m.v !== PROTOCOL_VERSION) {
      return this.fail(new AgentError(`${this.name}: the agent speaks protocol version ${String(m.v)}, this host speaks ${PROTOCOL_VERSION} (rebuild the image with "kvmq image build")`));
    }
    if (m.op === 'ready') {
      if (!this.readyMsg) {
        this.readyMsg = m;
        for (const w of this.readyWaiters.splice(0)) w.resolve(m);
      }
      return;
    }
    if (typeof m.id !== 'number') {
      return this.fail(new AgentError(`${this.name}: the agent reported an error outside any request: ${m.message ?? line.slice(0, 200)}`));
    }
    if (this.abandoned.delete(m.id)) return;
    const p = this.pending.get(m.id);
    if (!p) return this.fail(new AgentError(`${this.name}: the agent answered request ${m.id}, which is not pending`));
    this.pending.delete(m.id);
    if (m.op === 'error') {
      const out = m.output?.trim() ? `; output: ${m.output.trim().slice(-400)}` : '';
      p.reject(new AgentReplyError(`${this.name}: ${m.message ?? 'the agent reported an error'}${out}`));
    } else {
      p.resolve(m);
    }
  }

  /** End the channel: every waiter is rejected with the reason. The first reason wins. */
  fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const w of this.readyWaiters.splice(0)) w.reject(err);
  }

  /** Resolve on the agent's first ready message. */
  waitReady(): Promise<AgentMessage> {
    if (this.readyMsg) return Promise.resolve(this.readyMsg);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /**
   * Send one request and resolve with its reply. `timeoutMs` fails the whole channel: a guest that
   * stops answering is not trusted with the next request either.
   */
  request(op: string, fields: Record<string, unknown> = {}, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<AgentMessage> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<AgentMessage>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => {
        if (this.pending.delete(id)) this.abandoned.add(id);
        done();
        const r = opts.signal!.reason;
        reject(r instanceof Error ? r : new Error(String(r ?? 'aborted')));
      };
      const done = () => {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      this.pending.set(id, {
        resolve: (m) => (done(), resolve(m)),
        reject: (e) => (done(), reject(e)),
      });
      if (opts.timeoutMs) {
        timer = setTimeout(() => this.fail(new AgentError(`${this.name}: no answer to ${op} within ${Math.round(opts.timeoutMs! / 1000)} s`)), opts.timeoutMs);
      }
      if (opts.signal) {
        if (opts.signal.aborted) return onAbort();
        opts.signal.addEventListener('abort', onAbort, { once: true });
      }
      this.output.write(JSON.stringify({ v: PROTOCOL_VERSION, id, op, ...fields }) + '\n');
    });
  }
}
