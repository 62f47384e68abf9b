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
    expect(serverText('x', 'alarm.rule_value', { rule: 'health_low', feature: 'health_index', value: '18.4', asset: 'ca01/cylinder' }))
      .toBe('健康指数低：ca01/cylinder 的 健康指数 = 18.4')
    expect(serverParts([{ text: 'a', key: 'health.explain_no_penalties', params: { value: '93', status: 'good', driver: 'none' } },
      { text: 'b', key: 'health.velocity', params: { velocity: '1.20' } }], 'ab')).toBe('健康度 93/100（良好）；主要因素：无；扣分：无；振动速度有效值 1.20 mm/s')
    expect(serverText('x', 'health.envelope_line', { feature: 'env_bpfo', defect: 'outer race (BPFO)', ratio: '5.2' }))
      .toBe('包络谱主线 env_bpfo（外圈（BPFO））为背景的 5.2 倍')
    expect(serverText('x', 'health.explain', { value: '41', status: 'plan maintenance', driver: 'velocity_rms (ISO 20816)', penalties: 'anomaly_score -45' }))
      .toBe('健康度 41/100（计划维护）；主要因素：振动速度有效值（ISO 20816）；扣分：异常评分 -45')
    i18n.global.locale.value = 'en'
    expect(serverText('x', 'health.envelope_line', { feature: 'env_bpfo', defect: 'outer race (BPFO)', ratio: '5.2' }))
      .toBe('dominant envelope line env_bpfo (outer race (BPFO)) 5.2x the background')
    expect(serverText('bearing_outer on rf01/main_motor', 'wo.title.fault_on_asset', params)).toBe('bearing_outer on rf01/main_motor')
    i18n.global.locale.value = 'zh-CN'
  })
  it('shows the cloud model\'s work-order comment with both faults translated', async () => {
    const { i18n } = await import('../src/i18n/index')
    const { serverText } = await import('../src/format')
    const params = { snapshot: '7', edge: 'edge-a', fault: 'bearing_outer', confidence: '0.99', edge_fault: 'unknown',
      edge_confidence: '0.00' }
    const en = 'cloud diagnosis of snapshot 7 from edge-a: bearing_outer (confidence 0.99), the edge said unknown (confidence 0.00)'
    i18n.global.locale.value = 'zh-CN'
    expect(serverText(en, 'wo.comment.cloud_diagnosis', params))
      .toBe('云端复诊（来自 edge-a 的快照 7）：外圈故障（置信度 0.99），边缘诊断为未知故障（置信度 0.00）')
    i18n.global.locale.value = 'en'
    expect(serverText(en, 'wo.comment.cloud_diagnosis', params)).toBe(en)
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

describe('server-built maintenance text and refusals', () => {
  it('names fault kinds and penalties inside list parameters, in the language\'s list style', async () => {
    const { i18n } = await import('../src/i18n/index')
    const { serverText } = await import('../src/format')
    i18n.global.locale.value = 'zh-CN'
    expect(serverText('x', 'report.maint.faults', { count: '3', faults: 'bearing_outer 1, imbalance 2' }))
      .toBe('发现故障 3 起（外圈故障 1，不平衡 2）')
    expect(serverText('x', 'health.explain', { value: '41', status: 'plan maintenance', driver: 'anomaly_score',
      penalties: 'anomaly_score -45, velocity_rms (ISO 20816) -10, custom_rule -5' }))
      .toBe('健康度 41/100（计划维护）；主要因素：异常评分；扣分：异常评分 -45，振动速度有效值（ISO 20816） -10，custom_rule -5')
    expect(serverText('x', 'wo.comment.diagnosis', { fault_from: 'unknown', fault: 'imbalance' })).toBe('诊断更新：未知故障 → 不平衡')
    expect(serverText('overdue', 'plan.reason.overdue', {})).toBe('已逾期')
    i18n.global.locale.value = 'en'
    expect(serverText('x', 'report.maint.downtime', { hours: '19.5', assumptions: 'bearing_outer 24 h, imbalance 8 h' }))
      .toBe('downtime avoided: 19.5 h (assumed unplanned downtime per fault: bearing_outer 24 h, imbalance 8 h)')
    i18n.global.locale.value = 'zh-CN'
  })
  it('shows a work order\'s history lines from their keys and a typed comment as typed', async () => {
    const { serverLines } = await import('../src/format')
    expect(serverLines([{ text: 'assigned to wang', parts: [{ text: 'assigned to wang', key: 'wo.comment.assigned', params: { assignee: 'wang' } }] },
      { text: 'imbalance (confidence 0.80)', parts: [{ text: 'imbalance (confidence 0.80)', key: 'diag.fault_confidence', params: { fault: 'imbalance', confidence: '0.80' } }] },
      { text: '换了轴承', parts: [] }], '')).toBe('派工给 wang\n不平衡（置信度 0.80）\n换了轴承')
    expect(serverLines([], 'as typed')).toBe('as typed')
  })
  it('shows a diagnosis\' evidence lines in Chinese under their list marker', async () => {
    const { serverLines } = await import('../src/format')
    const ev = 'envelope line at BPFO (87.3 Hz) is 8.0x the local background; next strongest BPFI 1.3x'
    expect(serverLines([
      { text: 'bearing_outer (confidence 0.82)', parts: [{ text: 'bearing_outer (confidence 0.82)', key: 'diag.fault_confidence', params: { fault: 'bearing_outer', confidence: '0.82' } }] },
      { text: '  - ' + ev, prefix: '  - ', parts: [{ text: ev, key: 'diag.ev.envelope_hz', params: { line: 'BPFO', hz: '87.3', ratio: '8.0', next: 'BPFI', next_ratio: '1.3' } }] },
      { text: '  - kurtosis 5.2 (impacts push it above 3)', prefix: '  - ', parts: [{ text: 'kurtosis 5.2 (impacts push it above 3)', key: 'diag.ev.kurtosis', params: { kurtosis: '5.2' } }] },
      { text: '  - replaced the belt', parts: [] }], ''))
      .toBe('外圈故障（置信度 0.82）\n  - 包络谱 BPFO（87.3 Hz）谱线为局部背景的 8.0 倍；次强为 BPFI，1.3 倍\n  - 峭度 5.2（冲击使其高于 3）\n  - replaced the belt')
  })
  it('says an API refusal per code with its figures, else falls back to the server detail', async () => {
    const { errorOf } = await import('../src/api/client')
    const verify = errorOf(409, { code: 'verify_refused', detail: 'work order WO-1: cannot verify when resolved with health 55 < 80',
      key: 'error.verify_refused', params: { id: 'WO-1', health: '55', needed: '80' }, errors: null }, null)
    expect(verify.code).toBe('verify_refused')
    expect(verify.message).toBe('工单 WO-1：健康指数 55，未恢复到 80，维修效果未经设备确认，暂不能验证')
    expect(verify.detail).toContain('health 55 < 80')
    const span = errorOf(422, { code: 'span_too_large', detail: 'd', key: 'error.span_too_large',
      params: { days: '36500.0', what: 'KPIs by shift', limit: '31' } }, null)
    expect(span.message).toBe('时间跨度为 36500.0 天；按班次的 KPI 指标每次请求最多 31 天')
    const step = errorOf(409, { code: 'transition_refused', detail: 'd', key: 'error.transition_refused',
      params: { kind: 'work order', id: 'WO-1', action: 'start', state: 'closed' } }, null)
    expect(step.message).toBe('工单 WO-1：当前状态为“已关闭”，不能开始维修')
    expect(errorOf(401, { code: 'session_expired', detail: 'the session expired', key: null, params: null }, null).message)
      .toBe('登录已过期，请重新登录')
    expect(errorOf(409, { code: 'conflict', detail: "user 'alice' exists", key: null, params: null }, null).message)
      .toBe("user 'alice' exists")
    expect(errorOf(422, { code: 'span_too_large', detail: 'old server words' }, null).message).toBe('old server words')
  })
  it('says a refused request\'s invalid fields per pydantic type, else names the field', async () => {
    const { errorOf } = await import('../src/api/client')
    const err = errorOf(422, { code: 'invalid_request', detail: 'query.limit: Input should be greater than or equal to 1; ...',
      key: null, params: null, errors: [
        { loc: ['query', 'limit'], msg: 'Input should be greater than or equal to 1', type: 'greater_than_equal',
          key: 'error.field.greater_than_equal', params: { field: 'query.limit', ge: '1' } },
        { loc: ['body', 'asset'], msg: 'Field required', type: 'missing', key: 'error.field.missing', params: { field: 'body.asset' } },
        { loc: ['body', 'x'], msg: 'Value error, odd', type: 'value_error', key: 'error.field.invalid',
          params: { field: 'body.x', msg: 'Value error, odd' } }] }, null)
    expect(err.code).toBe('invalid_request')
    expect(err.message).toBe('query.limit：应大于或等于 1；body.asset：必填；body.x：输入无效（Value error, odd）')
    expect(err.detail).toContain('greater than or equal')
    // an older server's fields without keys: its summary as sent
    expect(errorOf(422, { code: 'invalid_request', detail: 'query.limit: bad', errors: [{ loc: ['query', 'limit'], msg: 'bad', type: 't' }] }, null).message)
      .toBe('query.limit: bad')
  })
})

describe('site names in the reader\'s language', () => {
  it('takes the site file\'s name for the locale, then for its language, then the default name', async () => {
    const { i18n } = await import('../src/i18n/index')
    const { localName, provinceName } = await import('../src/format')
    const ws = { name: 'Preparation', names: { 'zh-CN': '前纺' } }
    i18n.global.locale.value = 'zh-CN'
    expect(localName(ws)).toBe('前纺')
    expect(localName({ name: 'Winding', names: { zh: '络筒' } })).toBe('络筒')
    expect(localName({ name: 'Winding' })).toBe('Winding')
    expect(localName({ name: '', names: {} }, 'wind')).toBe('wind')
    expect(localName(undefined, 'mill-a')).toBe('mill-a')
    expect(provinceName('Jiangsu')).toBe('江苏')
    expect(provinceName('Atlantis')).toBe('Atlantis')
    i18n.global.locale.value = 'en'
    expect(localName(ws)).toBe('Preparation')
    expect(provinceName('Jiangsu')).toBe('Jiangsu')
    i18n.global.locale.value = 'zh-CN'
  })
})

describe('units', () => {
  it('says spindle-hours as a Chinese mill does', async () => {
    const { i18n } = await import('../src/i18n/index')
    const { unitLabel } = await import('../src/format')
    i18n.global.locale.value = 'zh-CN'
    expect(unitLabel('spindle * hour')).toBe('锭时')
    expect(unitLabel('kW')).toBe('kW')
    i18n.global.locale.value = 'en'
    expect(unitLabel('spindle * hour')).toBe('spindle·h')
    i18n.global.locale.value = 'zh-CN'
  })
})
