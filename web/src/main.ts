import { createApp } from 'vue'
import { ElLoading } from 'element-plus'
import 'element-plus/theme-chalk/base.css'
import 'element-plus/es/components/loading/style/css'
import 'element-plus/es/components/message/style/css'
import 'element-plus/es/components/message-box/style/css'
import './style.css'
import App from './App.vue'
import { i18n } from './i18n'
import { router } from './router'
import { onExpired } from './api/client'
import { clearSession } from './session'

document.documentElement.lang = i18n.global.locale.value as string

// Any 401 while signed in (idle expiry, logged out elsewhere, account disabled): say so, then sign in again.
onExpired(() => {
  const here = router.currentRoute.value
  if (here.name === 'login' || here.name === 'expired') return
  clearSession()
  void router.push({ name: 'expired', query: { next: here.fullPath } })
})

const app = createApp(App).use(i18n).use(router).use(ElLoading)
// Mount once the first route is resolved: the layout (and its calls) only for views behind the login.
void router.isReady().then(() => app.mount('#app'))
