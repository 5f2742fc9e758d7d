/** `import path from "./x.c" with { type: "file" }`: the path of the C file (inside /$bunfs/ in a compiled binary). */
declare module "*.c" {
  const path: string;
  export default path;
}
