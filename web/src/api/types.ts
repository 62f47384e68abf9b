/** Shapes of the cloud API's answers, as the console reads them (see /api/v1/openapi.json). */

export type Role = 'zone_operator' | 'mill_manager' | 'maintenance_engineer' | 'energy_officer' | 'viewer'

export interface Me {
  id?: number
  username: string
  full_name?: string
  role: Role
  mills: string[]
  language?: string | null
}

export interface Shift {
  name: string
  start: string
  hours: number
}

export interface Mill {
  id: string
  name: string
  /** the name in other languages, by language tag (site file) */
  names?: Record<string, string>
  zone: string
  timezone: string
  province: string
  shifts: Shift[]
  machines: number
  spindles: number
}

export interface PointNode {
  key: number | string
  tag: string
  name: string
  unit: string
  kind: string
  interval_s: number
  states?: Record<string, string> | null
  min?: number | null
  max?: number | null
}

export interface MachineNode {
  id: string
  name: string
  /** the name in other languages, by language tag (site file) */
  names?: Record<string, string>
  type: string
  spindles: number | null
  rated_kw: number | null
  points: PointNode[]
}

export interface LineNode {
  id: string
  name: string
  /** the name in other languages, by language tag (site file) */
  names?: Record<string, string>
  count_ne: number | null
  machines: MachineNode[]
}

export interface WorkshopNode {
  id: string
  name: string
  /** the name in other languages, by language tag (site file) */
  names?: Record<string, string>
  lines: LineNode[]
}

export interface MillTree {
  zone: string
  id: string
  name: string
  /** the name in other languages, by language tag (site file) */
  names?: Record<string, string>
  workshops: WorkshopNode[]
}

export interface LatestValue {
  tag: string
  key: number | string
  ts: string
  value: number | null
  quality: number
}

export interface Series {
  tag: string
  unit: string
  resolution: string
  reduced: boolean
  ts_ms: number[]
  value: (number | null)[]
}

export interface Kpi {
  group: 'machine' | 'line' | 'mill' | 'shift'
  id: string
  name: string
  mill: string
  line?: string | null
  machine_type?: string | null
  start: string
  end: string
  hours: number
  machines: number
  spindles: number
  run_h: number
  output_kg: number
  std_output_kg: number | null
  count_ne: number | null
  efficiency_pct: number | null
  oee_pct: number | null
  ends_down_per_1000_spindle_h: number | null
  gps_g: number | null
  std_gps_g: number | null
  energy_kwh: number
  sec_kwh_per_kg: number | null
}

export interface KpiReport {
  standard_ne: number
  start: string
  end: string
  by: string
  rows: Kpi[]
}

export interface AssetHealth {
  asset: string
  machine: string
  channel: string
  line: string
  at: string
  value: number
  status: string
  source: string
  driver: string
  penalties: Record<string, number>
  dominant_envelope: string | null
  iso_zone: string | null
  features: Record<string, number>
  explanation: string
  /** `explanation` in parts, each with its console message key (`server.<key>`) and parameters */
  explanation_parts?: ServerText[]
}

/** Server-built English with its message key and parameters (see `serverText` in format.ts). */
export interface ServerText {
  text: string
  key: string
  params: Record<string, string>
}

export interface MillHealth {
  mill: string
  value: number | null
  status: string | null
  worst: string | null
  assets: AssetHealth[]
}

/** A line of server-written text with its parts as message keys (none: show `text` as it is). */
export interface ServerLine {
  text: string
  parts: ServerText[]
  /** list marker written before a keyed line ("  - "), not part of its parts */
  prefix?: string
}

export interface Step {
  state: string
  at: string
  by: string
  comment: string
  comment_lines?: ServerLine[]
}

export interface Alarm {
  id: string
  mill: string
  asset: string
  rule: string
  severity: string
  state: string
  message: string
  message_key?: string | null
  message_params?: Record<string, string> | null
  value: number | null
  count: number
  raised_at: string
  history: Step[]
}

export interface WorkOrder {
  id: string
  mill: string
  asset: string
  title: string
  title_key?: string | null
  title_params?: Record<string, string> | null
  fault: string
  priority: string
  state: string
  created_at: string
  created_by: string
  due_at: string | null
  overdue: boolean
  assignee: string | null
  alarm_id: string | null
  description: string
  description_lines?: ServerLine[]
  hi_at_open: number | null
  hi_at_verify: number | null
  resolution?: 'repaired' | 'no_fault_found' | null
  history: Step[]
}

export interface Page<T> {
  items: T[]
  total: number
}

export interface PlanItem {
  asset: string
  title: string
  due_at: string
  priority: string
  state: string
  work_order: string | null
  overdue: boolean
  reason: string
  title_key?: string | null
  title_params?: Record<string, string> | null
  reason_key?: string | null
  reason_params?: Record<string, string> | null
}

export interface MonthlyMaintReport {
  month: string
  faults_found: Record<string, number>
  orders_created: number
  orders_resolved: number
  orders_verified: number
  overdue: number
  time_to_fix_h_median: number | null
  time_to_fix_h_mean: number | null
  downtime_avoided_h: number
  text: string[]
  text_parts?: ServerText[]
}

export interface Edge {
  id: string
  mill: string
  description: string
  active: boolean
  created_at: string
  revoked_at: string | null
  last_seen: string | null
  buffer_rows: number | null
  buffer_bytes: number | null
  lag_s: number | null
  uplink_state: string | null
  versions: Record<string, string>
  alarms: string[]
  rejected: Record<string, number>
  status: Record<string, unknown>
}

export interface UserRow {
  id: number
  username: string
  full_name: string
  role: Role
  mills: string[]
  disabled: boolean
  created_at: string
}

/** One mill on the zone screen (the zone overview call, or composed from older routes). */
export interface ZoneMill {
  id: string
  name: string
  names?: Record<string, string>
  spindles: number
  status: 'ok' | 'warn' | 'alarm' | 'offline' | 'unknown'
  output_kg: number | null
  efficiency_pct: number | null
  ends_down: number | null
  sec_kwh_per_kg: number | null
  kgco2e_per_kg: number | null
  health: number | null
  worst: string | null
  alarms: Record<string, number>
  overdue: number
  edges_online: number
  edges_total: number
  lag_s: number | null
  std_output_kg: number | null
  std_gps_g: number | null
}

export interface ZoneOverview {
  standard_ne: number
  mills: ZoneMill[]
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any
