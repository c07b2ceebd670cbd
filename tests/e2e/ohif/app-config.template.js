/** OHIF viewer configuration for tests/e2e/test_ohif.py: one DICOMweb data source, the archive
 * under test. tests/support/browser.py replaces __DICOMWEB_ROOT__ with its JSON-quoted URL.
 * Adapted from the dist's own app-config.js (config/default.js of @ohif/app). */
const dicomwebRoot = __DICOMWEB_ROOT__;

window.config = {
  name: 'pacs-e2e',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  // The viewer is served from another origin than the archive, on purpose (CORS is under
  // test); the warning dialog about it would only cover the viewport.
  showWarningMessageForCrossOrigin: false,
  // Headless Chromium may render through SwiftShader or the CPU: no dialog about it either.
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  // No "investigational use" dialog over the first page.
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'dicomweb',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomweb',
      configuration: {
        friendlyName: 'pacs',
        name: 'pacs',
        wadoUriRoot: dicomwebRoot,
        qidoRoot: dicomwebRoot,
        wadoRoot: dicomwebRoot,
        qidoSupportsIncludeField: true,
        supportsReject: false,
        supportsStow: true,
        imageRendering: 'wadors',
        // Thumbnails rendered by the viewer from the frames it fetches: the archive's
        // /rendered and /thumbnail resources are not part of what is tested here.
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        singlepart: false,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
};
