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
