/** Who is signed in (a reactive singleton: the console has one user at a time). */
import { reactive } from 'vue'
import * as api from './api'
import { ApiError } from './api/client'
import type { Me, Role } from './api/types'

export const session = reactive<{ user: Me | null; checked: boolean }>({ user: null, checked: false })

/** Ask the server who we are (once per page load unless `force`); null when not signed in. */
export async function whoAmI(force = false): Promise<Me | null> {
  if (session.checked && !force) return session.user
  session.user = null
  // Not signed in (401) is an answer; a server busy or restarting is not: ask again before giving up.
  for (let i = 0; i < 3; i++) {
    try {
      session.user = await api.me()
      break
    } catch (e) {
      if (e instanceof ApiError && e.status >= 400 && e.status < 500) break
      await new Promise((r) => setTimeout(r, 500 * (i + 1)))
    }
  }
  session.checked = true
  return session.user
}

export function clearSession(): void {
  session.user = null
  session.checked = true
}

export function hasRole(...roles: Role[]): boolean {
  return !!session.user && roles.includes(session.user.role)
}

/** Roles that may change alarms and work orders (the server enforces it too). */
export const MAINTAINERS: Role[] = ['zone_operator', 'mill_manager', 'maintenance_engineer']
