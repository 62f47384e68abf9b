import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router'
import type { Role } from '../api/types'
import { session, whoAmI } from '../session'
import { csrfToken } from '../api/client'
import { TREND_POINTS, carbonPath, prefetch, prefetchSeries, treePath } from '../api'
import { month as thisMonth } from '../format'

declare module 'vue-router' {
  interface RouteMeta {
    /** false: open without signing in */
    auth?: boolean
    /** only these roles (the server refuses the others too) */
    roles?: Role[]
    /** navigation key highlighted in the menu */
    nav?: string
  }
}

const routes: RouteRecordRaw[] = [
  { path: '/', redirect: '/zone' },
  { path: '/login', name: 'login', component: () => import('../views/LoginView.vue'), meta: { auth: false } },
  { path: '/expired', name: 'expired', component: () => import('../views/ErrorView.vue'), meta: { auth: false },
    props: { kind: 'expired' } },
  { path: '/forbidden', name: 'forbidden', component: () => import('../views/ErrorView.vue'), props: { kind: 'forbidden' } },
  { path: '/zone', name: 'zone', component: () => import('../views/ZoneView.vue'), meta: { nav: 'zone' } },
  { path: '/mills/:mill', name: 'mill', component: () => import('../views/MillView.vue'), props: true,
    meta: { nav: 'mill' } },
  { path: '/mills/:mill/machines/:machine', name: 'machine', component: () => import('../views/MachineView.vue'),
    props: true, meta: { nav: 'mill' } },
  { path: '/mills/:mill/maintenance', name: 'maintenance', component: () => import('../views/MaintenanceView.vue'),
    props: true, meta: { nav: 'maintenance' } },
  { path: '/mills/:mill/energy', name: 'energy', component: () => import('../views/EnergyView.vue'), props: true,
    meta: { nav: 'energy' } },
  { path: '/fleet', name: 'fleet', component: () => import('../views/FleetView.vue'), meta: { nav: 'fleet' } },
  { path: '/users', name: 'users', component: () => import('../views/UsersView.vue'),
    meta: { nav: 'users', roles: ['zone_operator'] } },
  { path: '/account', name: 'account', component: () => import('../views/AccountView.vue'), meta: { nav: 'account' } },
  { path: '/:rest(.*)*', name: 'notfound', component: () => import('../views/ErrorView.vue'), props: { kind: 'notfound' } },
]

export const router = createRouter({ history: createWebHistory(), routes })

router.beforeEach(async (to) => {
  // The view's code is fetched while the session is checked, not after (one round trip less on a fresh load).
  for (const rec of to.matched)
    for (const c of Object.values(rec.components ?? {})) if (typeof c === 'function') void (c as () => Promise<unknown>)()
  if (to.meta.auth === false) return true
  // The view's main call (the mill tree, the carbon month) likewise, where a session cookie is set.
  const mill = to.params.mill
  if (typeof mill === 'string' && !session.checked && csrfToken()) {
    if (to.name === 'mill' || to.name === 'machine') prefetch(treePath(mill))
    // The trend of a machine at its default points (ring frames, cards, winders: power and production
    // rate; MachineView's DEFAULT_POINTS): used by the view when the machine has them, else left unused.
    const machine = to.params.machine
    if (to.name === 'machine' && typeof machine === 'string' && !to.query.points && !to.query.zs) {
      const r = String(to.query.range ?? '24h')
      const spanMs = ({ '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 } as Record<string, number>)[r]
      if (spanMs) prefetchSeries(mill, machine, [`${mill}/${machine}/power`, `${mill}/${machine}/production_rate`],
        spanMs, TREND_POINTS)
    }
    if (to.name === 'energy') {
      const q = to.query.month
      prefetch(carbonPath(mill, typeof q === 'string' && /^\d{4}-\d{2}$/.test(q) ? q : thisMonth()))
    }
  }
  const user = await whoAmI()
  if (!user) return { name: 'login', query: { next: to.fullPath } }
  if (to.meta.roles && !to.meta.roles.includes(user.role)) return { name: 'forbidden', query: { from: to.fullPath } }
  return true
})

export { session }
