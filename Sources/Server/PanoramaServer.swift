import Foundation
import Hummingbird
import Imaging
import Logging
import Renderer
import Tensors
import Weights

/// `panorama serve`: AUTOMATIC1111's HTTP API (the subset clients use) on one engine.
///
/// Endpoints: `POST /sdapi/v1/txt2img`, `POST /sdapi/v1/img2img`, `GET /sdapi/v1/sd-models`,
/// `GET`/`POST /sdapi/v1/options`, `GET /sdapi/v1/samplers`, `GET /sdapi/v1/schedulers`,
/// `GET /sdapi/v1/loras`, `GET /sdapi/v1/embeddings`, `GET /sdapi/v1/progress`,
/// `POST /sdapi/v1/interrupt`, `POST /sdapi/v1/png-info`; and the studio's own under
/// `/panorama/v1` (`StudioAPI`).
public struct PanoramaServer: Sendable {
    public let engine: Engine

    public init(engine: Engine) {
        self.engine = engine
    }

    /// Refuses to expose the server beyond this machine without authentication or an explicit
    /// `insecure`: the message says what to pass.
    public static func checkExposure(host: String, apiAuth: String?, insecure: Bool) throws {
        if let apiAuth {
            let parts = apiAuth.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw APIError.detail(500, "--api-auth must be USER:PASSWORD, both non-empty")
            }
        }
        guard !isLoopback(host) && apiAuth == nil && !insecure else { return }
        throw APIError.detail(500, "refusing to listen on \(host) without authentication: anyone who can reach it could run jobs and fill the disk; pass --api-auth USER:PASSWORD, or --insecure if the network is trusted")
    }

    /// Whether `host` is this machine only (127.0.0.0/8, ::1, localhost).
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    /// The router with every endpoint, behind basic authentication when configured.
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: JSONNotFound(staticPaths: Self.staticPaths))
        if let auth = engine.configuration.apiAuth { router.add(middleware: BasicAuthentication(credentials: auth)) }
        let api = API(engine: engine)
        router.post("/sdapi/v1/txt2img") { request, _ in await api.respond { try await api.generate(request, img2img: false) } }
        router.post("/sdapi/v1/img2img") { request, _ in await api.respond { try await api.generate(request, img2img: true) } }
        router.get("/sdapi/v1/sd-models") { _, _ in await api.respond { api.sdModels() } }
        router.get("/sdapi/v1/options") { _, _ in await api.respond { api.options() } }
        router.post("/sdapi/v1/options") { request, _ in await api.respond { try await api.setOptions(request) } }
        router.get("/sdapi/v1/samplers") { _, _ in await api.respond { API.samplers() } }
        router.get("/sdapi/v1/schedulers") { _, _ in await api.respond { API.schedulers() } }
        router.get("/sdapi/v1/loras") { _, _ in await api.respond { api.loras() } }
        router.get("/sdapi/v1/embeddings") { _, _ in await api.respond { api.embeddings() } }
        router.get("/sdapi/v1/progress") { request, _ in
            let skip = ["true", "1"].contains(request.uri.queryParameters.get("skip_current_image")?.lowercased() ?? "")
            return await api.respond { api.progress(skipCurrentImage: skip) }
        }
        router.post("/sdapi/v1/interrupt") { _, _ in await api.respond { api.engine.interrupt(); return [:] } }
        router.post("/sdapi/v1/skip") { _, _ in await api.respond { api.engine.skip(); return [:] } }
        router.post("/sdapi/v1/png-info") { request, _ in await api.respond { try await api.pngInfo(request) } }

        let studio = StudioAPI(api: api)
        router.get("/panorama/v1/config") { _, _ in await api.respond { try studio.config() } }
        router.post("/panorama/v1/tokens") { request, _ in await api.respond { try await studio.tokens(request) } }
        router.post("/panorama/v1/jobs") { request, _ in await api.respondRaw { try await studio.submit(request) } }
        router.get("/panorama/v1/jobs") { _, _ in await api.respond { studio.jobs() } }
        router.get("/panorama/v1/jobs/:id") { _, context in
            await api.respond { try studio.job(context.parameters.get("id") ?? "") }
        }
        router.delete("/panorama/v1/jobs/:id") { _, context in
            await api.respond { try studio.cancel(context.parameters.get("id") ?? "") }
        }
        router.get("/panorama/v1/gallery") { request, _ in await api.respond { try studio.galleryList(request) } }
        router.get("/panorama/v1/gallery/:id") { _, context in
            await api.respondRaw { try studio.galleryImage(context.parameters.get("id") ?? "") }
        }
        addStudioRoutes(to: router)
        return router
    }

    /// The application on the configured host and port; `onRunning` gets the bound port (useful
    /// with port 0).
    public func makeApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
        -> some ApplicationProtocol {
        let configuration = engine.configuration
        var logger = Logger(label: "panorama")
        logger.logLevel = configuration.logLevel
        return Application(router: makeRouter(),
                           configuration: .init(address: .hostname(configuration.host, port: configuration.port),
                                                serverName: "panorama"),
                           onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? configuration.port) },
                           logger: logger)
    }

    /// Serves until SIGINT or SIGTERM.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        try await makeApplication(onRunning: onRunning).runService()
    }
}

extension PanoramaServer {
    /// The endpoints without path parameters: another method on one of them is 405, as FastAPI
    /// answers it.
    static let staticPaths: Set<String> = [
        "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/sd-models", "/sdapi/v1/options", "/sdapi/v1/samplers",
        "/sdapi/v1/schedulers", "/sdapi/v1/loras", "/sdapi/v1/embeddings", "/sdapi/v1/progress", "/sdapi/v1/interrupt",
        "/sdapi/v1/skip", "/sdapi/v1/png-info", "/panorama/v1/config", "/panorama/v1/tokens", "/panorama/v1/jobs",
        "/panorama/v1/gallery",
    ]
}

/// FastAPI's JSON bodies for requests no route takes: 404 `{"detail": "Not Found"}`, or 405
/// `{"detail": "Method Not Allowed"}` for a known path (clients such as `webuiapi` decode every
/// answer as JSON).
struct JSONNotFound<Context: RequestContext>: RouterMiddleware {
    let staticPaths: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            if staticPaths.contains(request.uri.path) {
                return API.json(APIError.detail(405, "Method Not Allowed").body, status: 405)
            }
            return API.json(APIError.detail(404, "Not Found").body, status: 404)
        }
    }
}

/// HTTP basic authentication, as A1111's `--api-auth`: 401 with A1111's message otherwise.
struct BasicAuthentication<Context: RequestContext>: RouterMiddleware {
    let expected: [UInt8]

    init(credentials: String) {
        expected = Array(("Basic " + Data(credentials.utf8).base64EncodedString()).utf8)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let given = Array((request.headers[.authorization] ?? "").utf8)
        // constant time in the length of the expected value
        var difference = given.count == expected.count ? 0 : 1
        for i in 0..<expected.count { difference |= Int(expected[i] ^ (i < given.count ? given[i] : 0)) }
        guard difference == 0 else {
            var response = API.json(APIError.detail(401, "Incorrect username or password").body, status: 401)
            response.headers[.wwwAuthenticate] = "Basic"
            return response
        }
        return try await next(request, context)
    }
}
