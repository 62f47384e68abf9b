/**
 * One fetch wrapper for the whole console: cookies (the browser session), the CSRF header on writes,
 * a bearer token where the server has no browser sessions, and one error type carrying the server's
 * reason and machine-readable code.
 */

import { serverError, serverFieldErrors, type FieldErrorBody } from '../format'

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter: number | null = null,
    /** The server's own words (`detail`), where `message` is their translation. */
    readonly detail: string = message,
  ) {
    super(message)
  }
}

const BASE = '/api/v1'
const TOKEN_KEY = 'spinline.token'
const CSRF_COOKIE = 'spinline_csrf'

type Listener = (e: ApiError) => void
const expiredListeners: Listener[] = []
/** Called on any 401 from a call made while logged in (session expired, user disabled, logged out elsewhere). */
export function onExpired(l: Listener): void {
  expiredListeners.push(l)
}

/** Bearer token, only where the server offers no cookie session (kept for this tab only). */
export function bearer(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY)
  } catch {
    return null
  }
}
export function setBearer(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token)
    else sessionStorage.removeItem(TOKEN_KEY)
  } catch {
    /* ignore */
  }
}

export function csrfToken(): string | null {
  const m = document.cookie.match(new RegExp('(?:^|; )' + CSRF_COOKIE + '=([^;]*)'))
  return m ? decodeURIComponent(m[1]) : null
}

export type Query = Record<string, string | number | boolean | null | undefined | string[]>

export function url(path: string, query?: Query): string {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v === null || v === undefined || v === '') continue
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x))
    else q.append(k, String(v))
  }
  const s = q.toString()
  return BASE + path + (s ? '?' + s : '')
}

export function authHeaders(method = 'GET'): Record<string, string> {
  const h: Record<string, string> = {}
  const tok = bearer()
  if (tok) h.Authorization = `Bearer ${tok}`
  if (method !== 'GET' && method !== 'HEAD') {
    const c = csrfToken()
    if (c) h['X-CSRF-Token'] = c
  }
  return h
}

/** The server's reason: `detail` as a string, `{code, message}`, or FastAPI's validation list. */
export function errorOf(status: number, body: unknown, retryAfter: number | null): ApiError {
  let code = `http_${status}`
  let msg = ''
  const b = body as Record<string, unknown> | null
  const d = b && typeof b === 'object' ? (b.detail ?? b.error ?? b) : body
  if (typeof d === 'string') msg = d
  else if (Array.isArray(d)) {
    msg = d.map((x: Record<string, unknown>) => `${((x.loc as unknown[]) ?? []).slice(1).join('.')}: ${x.msg}`).join('; ')
    code = 'validation'
  } else if (d && typeof d === 'object') {
    const o = d as Record<string, unknown>
    msg = String(o.message ?? o.detail ?? JSON.stringify(o))
    if (typeof o.code === 'string') code = o.code
  }
  if (b && typeof b === 'object' && typeof b.code === 'string') code = b.code
  const detail = msg || `HTTP ${status}`
  const key = b && typeof b === 'object' && typeof b.key === 'string' ? b.key : null
  const params = b && typeof b === 'object' && b.params && typeof b.params === 'object' ? b.params as Record<string, string> : null
  const fields = b && typeof b === 'object' && Array.isArray(b.errors) ? b.errors as FieldErrorBody[] : null
  const message = fields?.some((f) => f.key) ? serverFieldErrors(fields) : serverError(detail, code, key, params)
  return new ApiError(status, code, message, retryAfter, detail)
}

export interface CallOptions {
  method?: string
  body?: unknown
  query?: Query
  /** 401 is expected (login): do not announce an expired session. */
  anonymous?: boolean
}

// The server runs at most 4 requests of one user at once (``max_requests_per_user``; 429 beyond): a
// view's calls queue here in the order they were made (the trend before the panels below it) instead
// of being refused, and a 429 all the same (another tab of the same user) is asked again after its
// Retry-After.
const MAX_IN_FLIGHT = 4
let inFlight = 0
const waiting: (() => void)[] = []

async function slot<T>(f: () => Promise<T>): Promise<T> {
  if (inFlight >= MAX_IN_FLIGHT) await new Promise<void>((r) => waiting.push(r))
  else inFlight += 1
  try {
    return await f()
  } finally {
    const next = waiting.shift()
    if (next) next()        // the slot passes on to the next call
    else inFlight -= 1
  }
}

export async function call<T>(path: string, opts: CallOptions = {}): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await slot(() => callOnce<T>(path, opts))
    } catch (e) {
      if (!(e instanceof ApiError) || e.code !== 'too_many_concurrent_requests' || attempt >= 3) throw e
      await new Promise((r) => setTimeout(r, Math.min(e.retryAfter ?? 1, 5) * 1000 * (0.5 + Math.random() / 2)))
    }
  }
}

async function callOnce<T>(path: string, opts: CallOptions): Promise<T> {
  const method = opts.method ?? 'GET'
  const headers: Record<string, string> = { Accept: 'application/json', ...authHeaders(method) }
  let body: BodyInit | undefined
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json'
    body = JSON.stringify(opts.body)
  }
  let r: Response
  try {
    r = await fetch(url(path, opts.query), { method, headers, body, credentials: 'same-origin' })
  } catch (e) {
    throw new ApiError(0, 'network', String((e as Error).message ?? e))
  }
  if (r.status === 204) return undefined as T
  const text = await r.text()
  let parsed: unknown = null
  try {
    parsed = text ? JSON.parse(text) : null
  } catch {
    parsed = text
  }
  if (!r.ok) {
    const ra = r.headers.get('Retry-After')
    const err = errorOf(r.status, parsed, ra ? Number(ra) : null)
    if (r.status === 401 && !opts.anonymous) expiredListeners.forEach((l) => l(err))
    throw err
  }
  return parsed as T
}

/** GET a file (a report) and hand it to the browser as a download named `filename`. */
export async function download(path: string, filename: string, query?: Query): Promise<number> {
  const r = await fetch(url(path, query), { headers: authHeaders(), credentials: 'same-origin' })
  if (!r.ok) {
    let parsed: unknown = null
    try {
      parsed = await r.json()
    } catch {
      /* not JSON */
    }
    throw errorOf(r.status, parsed, null)
  }
  const blob = await r.blob()
  saveBlob(blob, filename)
  return blob.size
}

export function saveBlob(blob: Blob, filename: string): void {
  const a = document.createElement('a')
  a.href = URL.createObjectURL(blob)
  a.download = filename
  document.body.appendChild(a)
  a.click()
  setTimeout(() => {
    URL.revokeObjectURL(a.href)
    a.remove()
  }, 1000)
}
