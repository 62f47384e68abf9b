/**
 * The console's calls, one function per need. Where the server has a newer route (browser sessions,
 * the zone overview, many-points series, paged alarms and work orders), it is used; against an older
 * server the same answer is composed from the routes it has. "Route missing" is told apart from
 * "not found in your scope" by FastAPI's bare "Not Found" (a scoped 404 names what it did not find).
 */
import { ApiError, call, download, setBearer, url, authHeaders, bearer } from './client'
import { currentLocale } from '../i18n'
import type {
  Alarm, AssetHealth, Edge, Json, Kpi, KpiReport, LatestValue, Me, Mill, MillHealth, MillTree,
  MonthlyMaintReport, Page, PlanItem, Series, UserRow, WorkOrder, ZoneMill, ZoneOverview,
} from './types'

const missing = new Set<string>()

function routeMissing(e: unknown): boolean {
  return e instanceof ApiError && ((e.status === 404 && (e.detail === 'Not Found' || e.code === 'no_route')) ||
    e.status === 405)
}

/** `fresh()` where the server has the route, else `old()` (remembered for this page's life). */
async function prefer<T>(name: string, fresh: () => Promise<T>, old: () => Promise<T>): Promise<T> {
  if (!missing.has(name)) {
    try {
      return await fresh()
    } catch (e) {
      if (!routeMissing(e)) throw e
      missing.add(name)
    }
  }
  return old()
}

const enc = encodeURIComponent

// --- session ------------------------------------------------------------------------------------

export async function login(username: string, password: string): Promise<void> {
  await prefer('session',
    async () => {
      await call('/auth/session', { method: 'POST', body: { username, password }, anonymous: true })
      setBearer(null)
    },
    async () => {
      const t = await call<{ access_token: string }>('/auth/login', { method: 'POST', body: { username, password },
        anonymous: true })
      setBearer(t.access_token)
    })
}

export async function logout(): Promise<void> {
  try {
    if (bearer()) await call('/auth/logout', { method: 'POST', anonymous: true })
    else await call('/auth/session', { method: 'DELETE', anonymous: true })
  } catch {
    /* already gone */
  } finally {
    setBearer(null)
  }
}

export function me(): Promise<Me> {
  return prefer('me', () => call<Me>('/auth/me', { anonymous: true }), () => call<Me>('/users/me', { anonymous: true }))
}

export async function setMyLanguage(language: string): Promise<boolean> {
  try {
    await call('/auth/me/language', { method: 'PUT', body: { language } })
    return true
  } catch (e) {
    if (routeMissing(e) || (e instanceof ApiError && e.status === 422)) return false
    throw e
  }
}

export async function changePassword(current: string, password: string, userId?: number): Promise<void> {
  await prefer('password',
    () => call('/auth/me/password', { method: 'PUT', body: { current_password: current, new_password: password } }),
    () => call(`/users/${userId}`, { method: 'PATCH', body: { password } }))
}

// --- mills ----------------------------------------------------------------------------------------

export const mills = (): Promise<Mill[]> => call<Mill[]>('/mills')
export const mill = (id: string): Promise<Mill> => call<Mill>(`/mills/${enc(id)}`)
const early = new Map<string, { at: number; p: Promise<unknown> }>()
/** Start a GET the view is about to make, beside the session check (anonymous: a 401 is left to the
 * view's own call). The router calls it on a fresh page load: the data no longer waits for the view's code. */
export function prefetch(path: string): void {
  const p = call<unknown>(path, { anonymous: true })
  p.catch(() => early.delete(path))
  early.set(path, { at: Date.now(), p })
}
/** The answer of a `prefetch` of `path` made in the last seconds (once), else a fresh call. */
function reuse<T>(path: string): Promise<T> {
  const hit = early.get(path)
  if (!hit || Date.now() - hit.at > 10000) return call<T>(path)
  early.delete(path)
  return (hit.p as Promise<T>).catch(() => call<T>(path))
}
export const treePath = (id: string): string => `/mills/${enc(id)}/tree`
export const tree = (id: string): Promise<MillTree> => reuse<MillTree>(treePath(id))
export const latest = (id: string, points?: string[]): Promise<LatestValue[]> =>
  call<LatestValue[]>(`/mills/${enc(id)}/latest`, { query: { points: points?.join(',') } })
export const health = (id: string): Promise<MillHealth> => call<MillHealth>(`/mills/${enc(id)}/health`)

export function kpis(id: string, by: 'machine' | 'line' | 'mill' | 'shift', start?: string, end?: string):
  Promise<KpiReport> {
  return call<KpiReport>(`/mills/${enc(id)}/kpis`, { query: { by, start, end } })
}

/** Values of one point over [start, end), reduced by the server to about `maxPoints`. */
export function range(tag: string, start: string, end: string, maxPoints: number): Promise<Series> {
  return call<Series>(`/points/${tag.split('/').map(enc).join('/')}/range`, {
    query: { start, end, max_points: maxPoints } })
}

/** Points per series of the machine view's trend (about the chart's width in pixels, twice). */
export const TREND_POINTS = 800

const seriesKey = (millId: string, machine: string, tags: string[], maxPoints: number): string =>
  `series|${millId}|${machine}|${[...tags].sort().join(",")}|${maxPoints}`

/** Start the series call of a machine's trend beside the session check (see `prefetch`). */
export function prefetchSeries(millId: string, machine: string, tags: string[], spanMs: number, maxPoints: number): void {
  const end = Date.now()
  const p = call<Json>(`/mills/${enc(millId)}/series`, { anonymous: true, query: {
    machine, tag: tags, start: new Date(end - spanMs).toISOString(), end: new Date(end).toISOString(),
    max_points: maxPoints } })
  p.catch(() => undefined)
  early.set(seriesKey(millId, machine, tags, maxPoints), { at: Date.now(), p })
}

/** Many points of one machine in one call where the server offers it, else one call per point. */
export async function machineSeries(millId: string, machine: string, tags: string[], start: string, end: string,
  maxPoints: number): Promise<Series[]> {
  return prefer('series',
    async () => {
      const key = seriesKey(millId, machine, tags, maxPoints)
      const hit = early.get(key)
      if (hit) early.delete(key)
      const ask = (): Promise<Json> => call<Json>(`/mills/${enc(millId)}/series`, {
        query: { machine, tag: tags, start, end, max_points: maxPoints } })
      // A prefetch of these points made in the last seconds covers the same span but for those seconds.
      const r = hit && Date.now() - hit.at < 10000 ? await (hit.p as Promise<Json>).catch(ask) : await ask()
      const list: Json[] = Array.isArray(r) ? r : (r.series ?? r.points ?? [])
      const wanted = new Set(tags)
      return list.filter((s: Json) => wanted.has(s.tag)).map((s: Json) => ({
        tag: s.tag, unit: s.unit ?? '', resolution: s.resolution ?? '', reduced: !!s.reduced,
        ts_ms: s.ts_ms ?? (s.points ?? []).map((p: [number, number | null]) => p[0]),
        value: s.value ?? (s.points ?? []).map((p: [number, number | null]) => p[1]) }))
    },
    () => Promise.all(tags.map((t) => range(t, start, end, maxPoints))))
}

/** Live values by Server-Sent Events: the cookie goes along; with a bearer token, a fetch stream. */
export function stream(millId: string, points: string[], onValues: (v: LatestValue[]) => void,
  onState: (live: boolean) => void): () => void {
  const path = url(`/mills/${enc(millId)}/stream`, { points: points.join(',') })
  if (!bearer() && typeof EventSource !== 'undefined') {
    // EventSource reconnects by itself after a dropped connection, but not after an error status (a
    // 429 while the server still counts the streams of pages just left): then it is opened again here.
    let es: EventSource | null = null
    let timer: ReturnType<typeof setTimeout> | undefined
    let stopped = false
    let wait = 1000
    const open = (): void => {
      es = new EventSource(path, { withCredentials: true })
      es.addEventListener('latest', (ev) => onValues(JSON.parse((ev as MessageEvent).data)))
      es.onopen = () => {
        wait = 1000
        onState(true)
      }
      es.onerror = () => {
        onState(false)
        if (es?.readyState === EventSource.CLOSED && !stopped) {
          timer = setTimeout(open, wait)
          wait = Math.min(wait * 2, 15000)
        }
      }
    }
    open()
    return () => {
      stopped = true
      clearTimeout(timer)
      es?.close()
    }
  }
  const ctl = new AbortController()
  const run = async (): Promise<void> => {
    while (!ctl.signal.aborted) {
      try {
        const r = await fetch(path, { headers: authHeaders(), signal: ctl.signal, credentials: 'same-origin' })
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`)
        onState(true)
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader()
        let buf = ''
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          buf += value
          let i
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i)
            buf = buf.slice(i + 2)
            const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n')
            if (data) onValues(JSON.parse(data))
          }
        }
      } catch {
        if (ctl.signal.aborted) return
      }
      onState(false)
      await new Promise((res) => setTimeout(res, 2000))
    }
  }
  void run()
  return () => ctl.abort()
}

// --- zone -------------------------------------------------------------------------------------------

function num(x: unknown): number | null {
  return typeof x === 'number' && Number.isFinite(x) ? x : null
}

function zoneStatus(m: Partial<ZoneMill>): ZoneMill['status'] {
  if (m.edges_total && m.edges_online === 0) return 'offline'
  if ((m.alarms?.critical ?? 0) + (m.alarms?.alarm ?? 0) > 0 || (m.health ?? 100) < 50) return 'alarm'
  if ((m.alarms?.warning ?? 0) > 0 || (m.overdue ?? 0) > 0 || (m.health ?? 100) < 75) return 'warn'
  if (m.output_kg == null && m.health == null) return 'unknown'
  return 'ok'
}

/** Accept the server's overview whatever its exact field names: it is read, never trusted for shape. */
function normaliseZone(r: Json): ZoneOverview {
  const rows: Json[] = Array.isArray(r) ? r : (r.mills ?? [])
  return {
    standard_ne: num(r.standard_ne) ?? 40,
    mills: rows.map((m: Json) => {
      const k = m.kpis ?? m.today ?? m
      const h = m.health ?? {}
      const e = m.edges ?? {}
      const a = { ...(m.alarms_open ?? m.alarms ?? {}) }
      delete a.total
      const c = m.carbon ?? {}
      const z: ZoneMill = {
        id: m.id ?? m.mill, name: m.name ?? m.mill_name ?? m.id, names: m.names ?? {}, spindles: num(m.spindles) ?? 0, status: 'unknown',
        output_kg: num(k.output_today_kg ?? k.output_kg), efficiency_pct: num(k.efficiency_pct),
        ends_down: num(k.ends_down_per_1000_spindle_h ?? k.ends_down),
        sec_kwh_per_kg: num(k.kwh_per_kg ?? k.sec_kwh_per_kg),
        kgco2e_per_kg: num(m.kgco2e_per_kg_today ?? c.kgco2e_per_kg ?? m.kgco2e_per_kg),
        health: num(typeof h === 'number' ? h : h?.value),
        worst: (h && typeof h === 'object' ? (h.worst_asset ?? h.worst) : null) ?? null,
        alarms: a,
        overdue: num(m.work_orders_overdue ?? m.overdue) ?? 0,
        edges_online: num(e.online) ?? 0, edges_total: num(e.total) ?? 0,
        lag_s: num(e.max_lag_s ?? e.lag_s),
        std_output_kg: num(k.std_output_today_kg ?? k.std_output_kg), std_gps_g: num(k.std_gps_g),
      }
      // The server's status speaks of the edges (running, degraded, offline); alarms and health add to it here.
      z.status = m.status === 'offline' ? 'offline' : zoneStatus(z)
      if (m.status === 'degraded' && z.status === 'ok') z.status = 'warn'
      return z
    }),
  }
}

function todayStart(tz: string): string {
  // Midnight today in the mill's time zone, as UTC ISO: what "output today" means at the mill.
  const now = new Date()
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).formatToParts(now)
  const g = (t: string): number => Number(parts.find((p) => p.type === t)?.value)
  const localAsUtc = Date.UTC(g('year'), g('month') - 1, g('day'), g('hour'), g('minute'), g('second'))
  const offset = localAsUtc - Math.floor(now.getTime() / 1000) * 1000
  return new Date(Date.UTC(g('year'), g('month') - 1, g('day')) - offset).toISOString()
}

export { todayStart }

export function zoneOverview(): Promise<ZoneOverview> {
  return prefer('zone',
    async () => normaliseZone(await call<Json>('/zone/overview')),
    async () => {
      const ms = await mills()
      const edges = await fleet()
      const rows = await Promise.all(ms.map(async (m): Promise<ZoneMill> => {
        const [k, h, al, od] = await Promise.all([
          kpis(m.id, 'mill', todayStart(m.timezone)).catch(() => null),
          health(m.id).catch(() => null),
          call<Alarm[]>(`/mills/${enc(m.id)}/maintenance/alarms`).catch(() => [] as Alarm[]),
          call<WorkOrder[]>(`/mills/${enc(m.id)}/maintenance/work-orders/overdue`).catch(() => [] as WorkOrder[]),
        ])
        const row: Kpi | undefined = k?.rows[0]
        const alarms: Record<string, number> = {}
        for (const a of al) if (a.state !== 'cleared') alarms[a.severity] = (alarms[a.severity] ?? 0) + 1
        const mine = edges.filter((e) => e.mill === m.id && e.active)
        const online = mine.filter((e) => e.last_seen && Date.now() - Date.parse(e.last_seen) < 120_000)
        const lags = mine.map((e) => e.lag_s).filter((x): x is number => x != null)
        const z: ZoneMill = {
          id: m.id, name: m.name, names: m.names, spindles: m.spindles, status: 'unknown', output_kg: row?.output_kg ?? null,
          efficiency_pct: row?.efficiency_pct ?? null, ends_down: row?.ends_down_per_1000_spindle_h ?? null,
          sec_kwh_per_kg: row?.sec_kwh_per_kg ?? null, kgco2e_per_kg: null, health: h?.value ?? null,
          worst: h?.worst ?? null, alarms, overdue: od.length, edges_online: online.length, edges_total: mine.length,
          lag_s: lags.length ? Math.max(...lags) : null, std_output_kg: row?.std_output_kg ?? null,
          std_gps_g: row?.std_gps_g ?? null,
        }
        z.status = zoneStatus(z)
        return z
      }))
      return { standard_ne: 40, mills: rows }
    })
}

// --- maintenance ----------------------------------------------------------------------------------

export interface AlarmFilter {
  state?: string
  severity?: string
  asset?: string
  machine?: string
  page: number
  size: number
}

function paged<T>(all: T[], page: number, size: number): Page<T> {
  return { items: all.slice((page - 1) * size, page * size), total: all.length }
}

function pageOf<T>(r: Json): Page<T> {
  return Array.isArray(r) ? { items: r, total: r.length } : { items: r.items ?? [], total: r.total ?? 0 }
}

export function alarms(millId: string, f: AlarmFilter): Promise<Page<Alarm>> {
  const state = f.state === 'open' ? undefined : f.state
  return prefer('alarm-pages',
    async () => pageOf<Alarm>(await call<Json>('/alarms', { query: { mill: millId, machine: f.machine,
      state: f.state === 'open' ? ['active', 'acknowledged'] : f.state, severity: f.severity,
      offset: (f.page - 1) * f.size, limit: f.size } })),
    async () => {
      let all = await call<Alarm[]>(`/mills/${enc(millId)}/maintenance/alarms`, { query: { state, asset: f.asset } })
      if (f.state === 'open') all = all.filter((a) => a.state !== 'cleared')
      if (f.severity) all = all.filter((a) => a.severity === f.severity)
      all = [...all].reverse() // newest first
      return paged(all, f.page, f.size)
    })
}

export function alarmStep(millId: string, id: string, action: 'acknowledge' | 'clear', comment = ''): Promise<Alarm> {
  return call<Alarm>(`/mills/${enc(millId)}/maintenance/alarms/${enc(id)}/${action}`, { method: 'POST',
    body: { comment } })
}

export interface OrderFilter {
  state?: string
  asset?: string
  machine?: string
  page: number
  size: number
}

export function workOrders(millId: string, f: OrderFilter): Promise<Page<WorkOrder>> {
  return prefer('order-pages',
    async () => pageOf<WorkOrder>(await call<Json>('/work-orders', { query: { mill: millId, state: f.state,
      machine: f.machine, offset: (f.page - 1) * f.size, limit: f.size } })),
    async () => {
      const all = await call<WorkOrder[]>(`/mills/${enc(millId)}/maintenance/work-orders`, {
        query: { state: f.state ? [f.state] : undefined, asset: f.asset } })
      return paged([...all].reverse(), f.page, f.size)
    })
}

export function workOrder(millId: string, id: string): Promise<WorkOrder> {
  return call<WorkOrder>(`/mills/${enc(millId)}/maintenance/work-orders/${enc(id)}`)
}

export function orderFromAlarm(millId: string, alarmId: string): Promise<WorkOrder> {
  return call<WorkOrder>(`/mills/${enc(millId)}/maintenance/work-orders`, { method: 'POST', body: { alarm_id: alarmId } })
}

export function orderStep(millId: string, id: string, action: string, body: Record<string, unknown>): Promise<WorkOrder> {
  return call<WorkOrder>(`/mills/${enc(millId)}/maintenance/work-orders/${enc(id)}/${action}`, { method: 'POST', body })
}

export const plan = (millId: string): Promise<PlanItem[]> => call<PlanItem[]>(`/mills/${enc(millId)}/maintenance/plan`)
export const maintReport = (millId: string, month?: string): Promise<MonthlyMaintReport> =>
  call<MonthlyMaintReport>(`/mills/${enc(millId)}/maintenance/report`, { query: { month } })

// --- energy and carbon ----------------------------------------------------------------------------

export const carbonPath = (millId: string, month: string): string => `/mills/${enc(millId)}/carbon/${enc(month)}`
export const carbon = (millId: string, month: string): Promise<Json> => reuse<Json>(carbonPath(millId, month))

export async function carbonTrend(millId: string, months = 12): Promise<Json[]> {
  return prefer('carbon-trend',
    async () => {
      const r = await call<Json>(`/mills/${enc(millId)}/carbon/trend`, { query: { months } })
      return Array.isArray(r) ? r : (r.months ?? [])
    },
    async () => [])
}

/** Health index history of a machine's vibration assets with drivers, and the latest bearing defect lines. */
export function machineHealth(millId: string, machine: string, start: string, end: string): Promise<Json | null> {
  return prefer('health-history',
    () => call<Json>(`/mills/${enc(millId)}/machines/${enc(machine)}/health/history`, { query: { start, end } }),
    async () => null)
}

/** One vibration channel's newest raw snapshot: waveform (downsampled) and both spectra. */
export interface SnapshotChannel {
  channel: string; edge: string; reason: string; time: string; fs_hz: number; n: number; step: number
  /** Uncertain snapshots: the edge's weak diagnosis and the cloud model's answer on the raw waveform. */
  edge_diagnosis?: { fault: string; confidence: number } | null
  cloud_diagnosis?: { fault: string; confidence: number; band_hz: number[] | null; explain: string
    work_order: string | null; fault_updated: boolean; computed_ns: number } | null
  samples: number[]
  spectrum: { freq_hz: number[]; amplitude: number[] }
  envelope_spectrum: { freq_hz: number[]; amplitude: number[] }
}

/** The newest raw snapshot of each vibration channel of a machine; null when none was sent yet. */
export async function latestSnapshots(millId: string, machine: string, maxPoints: number, spectrumMaxHz?: number):
  Promise<SnapshotChannel[] | null> {
  try {
    const query: Record<string, number> = { max_points: maxPoints }
    if (spectrumMaxHz !== undefined) query.spectrum_max_hz = spectrumMaxHz
    const r = await call<{ channels: SnapshotChannel[] }>(
      `/mills/${enc(millId)}/machines/${enc(machine)}/snapshots/latest`, { query })
    return r.channels
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null
    throw e
  }
}

/** Ask the mill's edges for a fresh raw snapshot of the machine's vibration channels (queued: 202). */
export function requestSnapshot(millId: string, machine: string): Promise<{ assets: string[]; edges: number }> {
  return call(`/mills/${enc(millId)}/machines/${enc(machine)}/snapshot-requests`, { method: 'POST', body: {} })
}

/** Display metadata of a machine's points (names, units, ranges, state labels) where the server offers it. */
export function pointMeta(millId: string, machine: string): Promise<Json[]> {
  return prefer('point-meta', () => call<Json[]>(`/mills/${enc(millId)}/points`, { query: { machine } }),
    async () => [])
}

export type ReportFormat = 'html' | 'pdf' | 'xlsx' | 'pact' | 'json'

export async function downloadCarbon(millId: string, month: string, fmt: ReportFormat): Promise<string> {
  const name = `spinline-carbon-${millId}-${month}.${fmt === 'pact' ? 'pact.json' : fmt}`
  if (fmt === 'pact') await download(`/mills/${enc(millId)}/carbon/${enc(month)}/pact`, name)
  else if (fmt === 'json') await download(`/mills/${enc(millId)}/carbon/${enc(month)}`, name)
  else await download(`/mills/${enc(millId)}/carbon/${enc(month)}/report`, name, { format: fmt, lang: currentLocale() })
  return name
}

// --- fleet and users --------------------------------------------------------------------------------

export const fleet = (millId?: string): Promise<Edge[]> => call<Edge[]>('/edges', { query: { mill: millId } })
export const users = (): Promise<UserRow[]> => call<UserRow[]>('/users')
export const createUser = (body: Record<string, unknown>): Promise<UserRow> =>
  call<UserRow>('/users', { method: 'POST', body })
export const updateUser = (id: number, body: Record<string, unknown>): Promise<UserRow> =>
  call<UserRow>(`/users/${id}`, { method: 'PATCH', body })

export type { AssetHealth }
