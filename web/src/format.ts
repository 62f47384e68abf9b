/** Numbers, dates and units in the reader's locale (one place, so every view agrees). */
import { i18n } from './i18n'
import enMessages from './i18n/locales/en.json'

function loc(): string {
  return i18n.global.locale.value as string
}

export function fmtNum(v: number | null | undefined, digits = 1): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—'
  return new Intl.NumberFormat(loc(), { maximumFractionDigits: digits, minimumFractionDigits: 0 }).format(v)
}

export function fmtFixed(v: number | null | undefined, digits = 1): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—'
  return new Intl.NumberFormat(loc(), { maximumFractionDigits: digits, minimumFractionDigits: digits }).format(v)
}

export function fmtPct(v: number | null | undefined, digits = 1, ratio = false): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—'
  return new Intl.NumberFormat(loc(), { style: 'percent', maximumFractionDigits: digits,
    minimumFractionDigits: digits }).format(ratio ? v : v / 100)
}

/** Mass: kg below 10 t, tonnes above (a mill's day is reported in tonnes). */
export function fmtMass(kg: number | null | undefined): string {
  if (kg === null || kg === undefined || !Number.isFinite(kg)) return '—'
  const t = i18n.global.t
  return Math.abs(kg) >= 10000 ? `${fmtFixed(kg / 1000, 2)} ${t('units.t')}` : `${fmtNum(kg, 0)} ${t('units.kg')}`
}

/**
 * Specific energy. Chinese mills speak of 吨纱电耗 in kWh per tonne of yarn; English reports use kWh/kg.
 * Same figure, the unit each reader expects.
 */
export function fmtSec(kwhPerKg: number | null | undefined): string {
  if (kwhPerKg === null || kwhPerKg === undefined || !Number.isFinite(kwhPerKg)) return '—'
  return loc() === 'zh-CN' ? `${fmtNum(kwhPerKg * 1000, 0)} kWh/t` : `${fmtFixed(kwhPerKg, 2)} kWh/kg`
}

export function fmtCo2(kgPerKg: number | null | undefined): string {
  if (kgPerKg === null || kgPerKg === undefined || !Number.isFinite(kgPerKg)) return '—'
  return `${fmtFixed(kgPerKg, 2)} kgCO₂e/kg`
}

export function fmtKwh(kwh: number | null | undefined): string {
  if (kwh === null || kwh === undefined || !Number.isFinite(kwh)) return '—'
  return Math.abs(kwh) >= 100000 ? `${fmtFixed(kwh / 1000, 1)} MWh` : `${fmtNum(kwh, 0)} kWh`
}

export function fmtDate(iso: string | number | null | undefined, withTime = true): string {
  if (iso === null || iso === undefined || iso === '') return '—'
  const d = typeof iso === 'number' ? new Date(iso) : new Date(iso)
  if (Number.isNaN(d.getTime())) return '—'
  return new Intl.DateTimeFormat(loc(), withTime
    ? { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }
    : { year: 'numeric', month: '2-digit', day: '2-digit' }).format(d)
}

export function fmtTime(ms: number): string {
  return new Intl.DateTimeFormat(loc(), { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' })
    .format(new Date(ms))
}

/** "3 min" / "2 h" / "5 s" for a lag or an age. */
export function fmtDuration(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return '—'
  const t = i18n.global.t
  if (s < 90) return `${fmtNum(s, 0)} ${t('units.s')}`
  if (s < 5400) return `${fmtNum(s / 60, 0)} ${t('units.min')}`
  return `${fmtNum(s / 3600, 1)} ${t('units.h')}`
}

/** Display unit of a point unit as the site file spells it. */
export function unitLabel(u: string): string {
  // Spindle-hours are 锭时 to a Chinese mill (千锭时断头 counts ends down per 1000 of them).
  const map: Record<string, string> = { percent: '%', dimensionless: '', degC: '°C',
    'spindle * hour': loc() === 'zh-CN' ? '锭时' : 'spindle·h', hour: 'h', event: '', spindle: '' }
  return u in map ? map[u] : u
}

/** Translate with a fallback to the raw key's last part (for ids the catalogue may not know). */
export function tr(key: string, fallback?: string): string {
  const t = i18n.global.t
  const te = i18n.global.te
  return te(key) ? t(key) : (fallback ?? key.split('.').pop() ?? key)
}

/** Vibration feature suffixes, longest first (``vib_main_motor_env_bpfo`` is main_motor + env_bpfo). */
const VIB_FEATURES = Object.keys(enMessages.vibFeature).sort((a, b) => b.length - a.length)

/** A point's name in the reader's language: the catalogue's; a vibration feature point as its channel and
 *  feature (vib_supply_fan_velocity_rms: 送风机 振动速度有效值); else the site's name with spaces. */
export function pointLabel(name: string): string {
  if (i18n.global.te('point.' + name)) return i18n.global.t('point.' + name)
  if (name.startsWith('vib_')) {
    const feat = VIB_FEATURES.find((f) => name.endsWith('_' + f) && name.length > 'vib_'.length + f.length + 1)
    if (feat) {
      const ch = name.slice('vib_'.length, -feat.length - 1)
      return `${tr('vibChannel.' + ch, ch.replace(/_/g, ' '))} ${tr('vibFeature.' + feat)}`
    }
  }
  return name.replace(/_/g, ' ')
}

export function healthColour(v: number | null | undefined): string {
  if (v === null || v === undefined) return '#c0c4cc'
  if (v >= 80) return '#2ba471'
  if (v >= 60) return '#e6a23c'
  if (v >= 40) return '#f56c6c'
  return '#c45656'
}

export const STATE_COLOUR: Record<string, string> = {
  running: '#2ba471', idle: '#e6a23c', stopped: '#909399', fault: '#d54941', doffing: '#409eff',
  unknown: '#c0c4cc', offline: '#c0c4cc', none: '#a8b3c2',
}

export function month(d = new Date()): string {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}`
}

/** Parameters of server-built text whose values are ids the catalogue names (e.g. fault kinds). */
const SERVER_PARAM_KEYS: Record<string, string> = {
  fault: 'server.fault.', fault_from: 'server.fault.', edge_fault: 'server.fault.', status: 'server.status.', driver: 'server.driver.',
  defect: 'server.defect.', kind: 'server.kind.', action: 'server.action.', state: 'server.state.', what: 'server.what.',
  rule: 'server.rule.', feature: 'server.feature.',
}

/** Parameters that are ", "-joined "<id> <figure>" lists (health penalties, faults of a month): ids named per item. */
const SERVER_LIST_KEYS: Record<string, string> = {
  penalties: 'server.driver.', faults: 'server.fault.', assumptions: 'server.fault.',
}

/** One parameter value in the reader's language: an id the catalogue names, else the value as sent. */
function serverParam(name: string, v: string): string {
  const te = i18n.global.te
  const prefix = SERVER_PARAM_KEYS[name]
  if (prefix) return te(prefix + serverId(v)) ? i18n.global.t(prefix + serverId(v)) : v
  const list = SERVER_LIST_KEYS[name]
  if (!list || !v) return v
  return v.split(', ').map((item) => {
    // The id is the longest leading run of words the catalogue knows ("velocity_rms (ISO 20816) -45").
    const words = item.split(' ')
    for (let i = words.length - 1; i >= 1; i--) {
      const id = list + serverId(words.slice(0, i).join(' '))
      if (te(id)) return [i18n.global.t(id), ...words.slice(i)].join(' ')
    }
    return item
  }).join(String(i18n.global.locale.value).startsWith('zh') ? '，' : ', ')
}

/** A parameter value as a catalogue id: "velocity_rms (ISO 20816)" -> "velocity_rms_ISO_20816". */
export function serverId(v: string): string {
  return v.replace(/\W+/g, '_').replace(/^_+|_+$/g, '')
}

/**
 * Text the server built for people, in the reader's language: the catalogue entry `server.<key>` with the
 * server's parameters (fault kinds and health status translated, asset and machine names kept as sent),
 * or the server's English `text` when it gave no key or the catalogue does not know it.
 */
export function serverText(text: string, key?: string | null, params?: Record<string, string> | null): string {
  const te = i18n.global.te
  if (!key || !te('server.' + key)) return text
  const p: Record<string, string> = {}
  for (const [k, v] of Object.entries(params ?? {})) p[k] = serverParam(k, String(v))
  return i18n.global.t('server.' + key, p)
}

/** Server text sent line by line (a work order's description, a history comment), each line in parts. */
export function serverLines(lines: readonly { text: string; parts: { text: string; key: string; params: Record<string, string> }[]; prefix?: string }[] | undefined,
  text: string): string {
  if (!lines?.length) return text
  // a keyed line's list marker ("  - " before a diagnosis' evidence) is sent apart from its parts
  return lines.map((l) => (l.parts?.length ? l.prefix ?? '' : '') + serverParts(l.parts, l.text)).join('\n')
}

/**
 * An API refusal in the reader's language: the server's message key with its parameters where it sent them,
 * else a message for its stable `code` where the catalogue has one, else the server's `detail` as sent.
 */
export function serverError(detail: string, code?: string | null, key?: string | null,
  params?: Record<string, string> | null): string {
  if (key && params) return serverText(detail, key.replace(/^server\./, ''), params)
  if (code && i18n.global.te('errors.code.' + code)) return i18n.global.t('errors.code.' + code)
  return detail
}

/** One invalid field of a refused request (`errors[]` of an `invalid_request` answer). */
export interface FieldErrorBody {
  loc: (string | number)[]
  msg: string
  type: string
  key?: string | null
  params?: Record<string, string> | null
}

/** A refused request's invalid fields in the reader's language (per pydantic type, else naming the field), as the
 * server's summary does: the first five, then how many more. */
export function serverFieldErrors(errors: readonly FieldErrorBody[]): string {
  const zh = String(i18n.global.locale.value).startsWith('zh')
  const lines = errors.slice(0, 5).map((e) => serverText(`${e.loc.join('.')}: ${e.msg}`, e.key, e.params))
  const more = errors.length > 5 ? (zh ? `（另有 ${errors.length - 5} 项）` : ` (and ${errors.length - 5} more)`) : ''
  return lines.join(zh ? '；' : '; ') + more
}

/** Server text sent in parts (a health explanation), each in the reader's language, joined as the language does. */
export function serverParts(parts: readonly { text: string; key: string; params: Record<string, string> }[] | undefined, text: string): string {
  if (!parts?.length) return text
  const sep = String(i18n.global.locale.value).startsWith('zh') ? '；' : '; '
  return parts.map((p) => serverText(p.text, p.key, p.params)).join(sep)
}

/**
 * A site node's name in the reader's language: the site file's `names` for the locale (then for its
 * language alone, `zh` for `zh-CN`), else its default `name`. Names are the mill's own data, so they are
 * not in the catalogues; a mill that writes only `name` is shown as written.
 */
export function localName(node: { name: string; names?: Record<string, string> } | null | undefined,
  fallback = ''): string {
  if (!node) return fallback
  const l = loc()
  const names = node.names ?? {}
  return names[l] ?? names[l.split('-')[0]] ?? (node.name || fallback)
}

/** A province as the reader says it (the site file keeps the English key the emission factors use). */
export function provinceName(p: string | null | undefined): string {
  return p ? tr('province.' + p, p) : ''
}
