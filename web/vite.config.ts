import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'
import Components from 'unplugin-vue-components/vite'
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers'

// The console is served by the cloud process at "/" (spinline.cloud.console); `vite` (dev) proxies
// the API to a running cloud on SPINLINE_API (default http://127.0.0.1:8000).
export default defineConfig({
  // Element Plus components are imported where a template uses them (with their CSS): the first view
  // loads only what it shows, not the whole library.
  plugins: [vue(), Components({ resolvers: [ElementPlusResolver({ importStyle: 'css' })], dts: false })],
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1200,
    rolldownOptions: {
      output: {
        // Long-lived vendor chunks: a console release that changes only views keeps these cached.
        codeSplitting: {
          groups: [
            { name: 'element-plus', test: /node_modules[\\/](element-plus|@element-plus|@floating-ui|lodash)/ },
            { name: 'echarts', test: /node_modules[\\/](echarts|zrender)/ },
            { name: 'vue', test: /node_modules[\\/](vue|@vue|vue-router|vue-i18n|@intlify)/ },
          ],
        },
      },
    },
  },
  server: {
    proxy: { '/api': { target: process.env.SPINLINE_API ?? 'http://127.0.0.1:8000', changeOrigin: false } },
  },
  test: { include: ['tests/**/*.test.ts'], environment: 'node' },
})
