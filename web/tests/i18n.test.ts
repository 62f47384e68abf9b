import { describe, expect, it } from 'vitest'
import zh from '../src/i18n/locales/zh-CN.json'
import en from '../src/i18n/locales/en.json'
import { initialLocale } from '../src/i18n/index'

function keys(o: Record<string, unknown>, p = ''): string[] {
  return Object.entries(o).flatMap(([k, v]) => (v && typeof v === 'object' ? keys(v as Record<string, unknown>, `${p}${k}.`) : [`${p}${k}`]))
}

describe('message catalogues', () => {
  it('have the same keys in zh-CN and English', () => {
    const a = new Set(keys(zh))
    const b = new Set(keys(en))
    expect([...a].filter((k) => !b.has(k))).toEqual([])
    expect([...b].filter((k) => !a.has(k))).toEqual([])
  })
  it('have no empty message', () => {
    for (const [name, cat] of [['zh-CN', zh], ['en', en]] as const) {
      const flat = keys(cat).map((k) => [k, k.split('.').reduce((o: any, x) => o[x], cat)])
      expect(flat.filter(([, v]) => typeof v !== 'string' || !v.trim()).map(([k]) => `${name}:${k}`)).toEqual([])
    }
  })
  it('speak the mill terms in Chinese', () => {
    expect(zh.stage.ring_frame).toBe('细纱机')
    expect(zh.stage.card).toBe('梳棉机')
    expect(zh.zone.endsDown).toBe('千锭时断头')
  })
})

describe('initial language', () => {
  it('follows the stored choice, then the browser', () => {
    expect(initialLocale('en', ['zh-CN'])).toBe('en')
    expect(initialLocale(null, ['zh-TW', 'en'])).toBe('zh-CN')
    expect(initialLocale(null, ['en-GB'])).toBe('en')
    expect(initialLocale('fr', ['de'])).toBe('zh-CN')
  })
})

describe('server-built text', () => {
  it('shows the catalogue entry with translated fault kinds, asset names kept', async () => {
    const { i18n } = await import('../src/i18n/index')
    const { serverText, serverParts } = await import('../src/format')
    i18n.global.locale.value = 'zh-CN'
    const params = { fault: 'bearing_outer', asset: 'rf01/main_motor' }
    expect(serverText('bearing_outer on rf01/main_motor', 'wo.title.fault_on_asset', params)).toBe('rf01/main_motor：外圈故障')
    expect(serverText('x', 'carbon.opp.idle_off', {})).toBe('生产设备停机时关断电源')
    expect(serverParts([{ text: 'a', key: 'health.explain_no_penalties', params: { value: '93', status: 'good', driver: 'none' } },
      { text: 'b', key: 'health.velocity', params: { velocity: '1.20' } }], 'ab')).toBe('健康度 93/100（良好）；主要因素：无；扣分：无；振动速度有效值 1.20 mm/s')
    expect(serverText('x', 'health.envelope_line', { feature: 'env_bpfo', defect: 'outer race (BPFO)', ratio: '5.2' }))
      .toBe('包络谱主线 env_bpfo（外圈（BPFO））为背景的 5.2 倍')
    expect(serverText('x', 'health.explain', { value: '41', status: 'plan maintenance', driver: 'velocity_rms (ISO 20816)', penalties: 'anomaly_score -45' }))
      .toBe('健康度 41/100（计划维护）；主要因素：振动速度有效值（ISO 20816）；扣分：anomaly_score -45')
    i18n.global.locale.value = 'en'
    expect(serverText('x', 'health.envelope_line', { feature: 'env_bpfo', defect: 'outer race (BPFO)', ratio: '5.2' }))
      .toBe('dominant envelope line env_bpfo (outer race (BPFO)) 5.2x the background')
    expect(serverText('bearing_outer on rf01/main_motor', 'wo.title.fault_on_asset', params)).toBe('bearing_outer on rf01/main_motor')
    i18n.global.locale.value = 'zh-CN'
  })
  it('falls back to the English text for an unknown key or none', async () => {
    const { serverText } = await import('../src/format')
    expect(serverText('grease the rings', 'wo.title.no_such_key', { a: 'b' })).toBe('grease the rings')
    expect(serverText('typed by a person', null, null)).toBe('typed by a person')
  })
  it('names the fault kinds as maintenance engineers say them', () => {
    expect(zh.server.fault).toMatchObject({ bearing_outer: '外圈故障', bearing_inner: '内圈故障', bearing_ball: '滚动体故障',
      imbalance: '不平衡', misalignment: '不对中', looseness: '松动', belt_slip: '皮带打滑' })
  })
})
