/**
 * The chart component, loaded after the view: tables and figures show first, and ECharts (the
 * largest library) is fetched and parsed beside them rather than before them.
 */
import { defineAsyncComponent } from 'vue'

export default defineAsyncComponent(() => import('./EChart.vue'))
