/** Who is signed in (a reactive singleton: the console has one user at a time). */
import { reactive } from 'vue'
import * as api from './api'
import type { Me, Role } from './api/types'

export const session = reactive<{ user: Me | null; checked: boolean }>({ user: null, checked: false })

/** Ask the server who we are (once per page load unless `force`); null when not signed in. */
export async function whoAmI(force = false): Promise<Me | null> {
  if (session.checked && !force) return session.user
  try {
    session.user = await api.me()
  } catch {
    session.user = null
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
