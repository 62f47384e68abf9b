import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'
import Components from 'unplugin-vue-components/vite'
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers'
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { brotliCompressSync, constants, gzipSync } from 'node:zlib'
import type { Plugin } from 'vite'

/**
 * Brotli and gzip copies of every text file of the build (x.js.br, x.js.gz beside x.js), compressed
 * once at build time at the highest level: the cloud sends them to browsers that accept them
 * (spinline.cloud.console) without compressing anything per request.
 */
function precompress(): Plugin {
  let outDir = 'dist'
  return {
    name: 'spinline-precompress',
    apply: 'build',
    configResolved(c) {
      outDir = c.build.outDir
    },
    closeBundle() {
      const walk = (dir: string): string[] => readdirSync(dir).flatMap((n) => {
        const p = join(dir, n)
        return statSync(p).isDirectory() ? walk(p) : [p]
      })
      for (const f of walk(outDir)) {
        if (!/\.(js|css|html|svg|json)$/.test(f) || statSync(f).size < 1024) continue
        const data = readFileSync(f)
        writeFileSync(f + '.gz', gzipSync(data, { level: 9 }))
        writeFileSync(f + '.br', brotliCompressSync(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }))
      }
    },
  }
}

// The console is served by the cloud process at "/" (spinline.cloud.console); `vite` (dev) proxies
// the API to a running cloud on SPINLINE_API (default http://127.0.0.1:8000).
export default defineConfig({
  // Element Plus components are imported where a template uses them (with their CSS): the first view
  // loads only what it shows, not the whole library.
  plugins: [vue(), Components({ resolvers: [ElementPlusResolver({ importStyle: 'css' })], dts: false }), precompress()],
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
