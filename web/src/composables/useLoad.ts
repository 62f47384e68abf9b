/** Load data for a view: loading flag, the server's reason on failure, and "not found" told apart. */
import { ref, type Ref } from 'vue'
import { ApiError } from '../api/client'

export interface Load<T> {
  data: Ref<T | null>
  loading: Ref<boolean>
  error: Ref<string>
  notFound: Ref<boolean>
  run: () => Promise<void>
}

export function useLoad<T>(fn: () => Promise<T>): Load<T> {
  const data = ref<T | null>(null) as Ref<T | null>
  const loading = ref(false)
  const error = ref('')
  const notFound = ref(false)
  async function run(): Promise<void> {
    loading.value = true
    error.value = ''
    try {
      data.value = await fn()
      notFound.value = false
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 403)) notFound.value = true
      else if (e instanceof ApiError && e.status === 401) error.value = ''
      else error.value = e instanceof ApiError ? e.message : String(e)
    } finally {
      loading.value = false
    }
  }
  return { data, loading, error, notFound, run }
}
