import Hummingbird

extension PanoramaServer {
    /// The studio page: `GET /` and its two assets, `GET /studio/studio.css` and
    /// `GET /studio/studio.js`. They are compiled-in strings, so no path ever reaches the file
    /// system and any other `/studio/…` is the router's 404. Behind the same basic
    /// authentication as the API (the middleware is on the router).
    func addStudioRoutes(to router: Router<BasicRequestContext>) {
        router.get("/") { _, _ in StudioAsset.page.response }
        router.get("/studio/studio.css") { _, _ in StudioAsset.style.response }
        router.get("/studio/studio.js") { _, _ in StudioAsset.script.response }
    }
}

/// One compiled-in file of the studio with its content type.
struct StudioAsset: Sendable {
    let contentType: String
    let body: ByteBuffer

    static let page = StudioAsset(contentType: "text/html; charset=utf-8", text: StudioPage.html)
    static let style = StudioAsset(contentType: "text/css; charset=utf-8", text: StudioPage.css)
    static let script = StudioAsset(contentType: "text/javascript; charset=utf-8", text: StudioPage.script)

    /// Scripts and styles from this origin only (none inline), pictures also from `data:` and
    /// `blob:` URLs (previews, uploads, masks): a prompt that ends up in the page can't run code.
    static let contentSecurityPolicy =
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

    init(contentType: String, text: String) {
        self.contentType = contentType
        body = ByteBuffer(string: text)
    }

    var response: Response {
        let headers: HTTPFields = [.contentType: contentType, .cacheControl: "no-cache",
                                   .contentSecurityPolicy: Self.contentSecurityPolicy, .xContentTypeOptions: "nosniff"]
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
    }
}
