package connector

// notion is Notion's public connections, following
// https://developers.notion.com/docs/authorization: HTTP Basic client
// authentication, a JSON token request with a Notion-Version header, and
// refresh tokens that rotate (https://developers.notion.com/reference/refresh-a-token:
// each refresh returns a new access and a new refresh token). Its tokens
// carry no expires_in: they are refreshed after an upstream 401.
var _ = register(&Provider{
	Name:                 "notion",
	Doc:                  "https://developers.notion.com/docs/authorization",
	AuthURL:              "https://api.notion.com/v1/oauth/authorize",
	TokenURL:             "https://api.notion.com/v1/oauth/token",
	RevocationURL:        "https://api.notion.com/v1/oauth/revoke",
	AuthStyle:            AuthBasic,
	FixedAuthStyle:       true,
	TokenBody:            BodyJSON,
	TokenHeaders:         map[string]string{"Notion-Version": NotionVersion},
	AuthParams:           map[string]string{"owner": "user"},
	APIBase:              "https://api.notion.com",
	RotatesRefreshTokens: true,
})

// NotionVersion is the Notion-Version header sent on Notion token requests.
const NotionVersion = "2022-06-28"
