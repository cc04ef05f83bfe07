// zod, extended once with OpenAPI metadata before any schema is defined, so the same schemas give
// request validation, TypeScript types and the /openapi.json document.
import { z } from 'zod';
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';

extendZodWithOpenApi(z);
export { z };
