/** Process stages in mill order and machine state decoding, shared by the mill and machine views. */
import type { MachineNode, PointNode } from './api/types'

export const STAGES = ['blowroom', 'card', 'comber', 'draw_frame', 'roving_frame', 'ring_frame', 'winder'] as const
export const UTILITIES = ['air_compressor', 'hvac', 'energy_meter']

export function stageIndex(type: string): number {
  const i = (STAGES as readonly string[]).indexOf(type)
  return i < 0 ? STAGES.length + UTILITIES.indexOf(type) + 1 : i
}

/** The site template's state codes (examples/*.yaml); the server's point metadata wins where it sends them. */
export const DEFAULT_STATES: Record<string, string> = { 0: 'running', 1: 'idle', 2: 'stopped', 3: 'fault', 4: 'doffing' }

export function stateName(p: PointNode | undefined, v: number | null | undefined): string {
  if (v === null || v === undefined) return 'unknown'
  const map = p?.states ?? DEFAULT_STATES
  return map[String(Math.round(v))] ?? 'unknown'
}

export function statePoint(m: MachineNode): PointNode | undefined {
  return m.points.find((p) => p.name === 'state')
}

/** The asset ids of a machine's vibration channels (`machine/channel`) from its `vib_<ch>_health_index` points. */
export function vibChannels(m: MachineNode): string[] {
  return m.points.filter((p) => /^vib_.+_health_index$/.test(p.name)).map((p) => p.name.slice(4, -'_health_index'.length))
}
